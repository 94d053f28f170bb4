"""Deterministic, realistic-looking records for simulated repos.

The mix follows the real network: likes are the majority, then posts (some replies,
quotes and image posts with blob links), reposts, follows, a few blocks, the profile
``self`` record, and a share of non-Bluesky collections. Record keys are TIDs whose
timestamp matches ``createdAt``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import cbrrr

from bsky_backfill.atproto.syntax import micros_to_tid

__all__ = ["COLLECTION_MIX", "RecordMix", "generate_records"]

COLLECTION_MIX: Final[tuple[tuple[str, float], ...]] = (
    ("app.bsky.feed.like", 0.55),
    ("app.bsky.feed.post", 0.20),
    ("app.bsky.feed.repost", 0.10),
    ("app.bsky.graph.follow", 0.10),
    ("app.bsky.graph.block", 0.02),
    ("com.example.bookmark", 0.02),
    ("fyi.unravel.frontpage.vote", 0.01),
)
_START: Final = int(datetime(2023, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
_END: Final = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1_000_000)
_WORDS: Final = [
    "sky",
    "blue",
    "post",
    "thread",
    "feed",
    "like",
    "repost",
    "hello",
    "world",
    "data",
    "science",
    "birds",
]


@dataclass(frozen=True, slots=True)
class RecordMix:
    """What share of records goes to each collection, the createdAt span (µs), and the
    shares of records whose ``createdAt`` disagrees with their TID record key: ``skewed``
    (days off), ``missing``, ``malformed`` (not a datetime) or ``future`` (years ahead).
    """

    collections: tuple[tuple[str, float], ...] = COLLECTION_MIX
    start_micros: int = _START
    end_micros: int = _END
    skewed: float = 0.02
    missing: float = 0.01
    malformed: float = 0.01
    future: float = 0.005


def _iso(micros: int) -> str:
    stamp = datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _strong_ref(rng: random.Random, did: str, collection: str) -> dict[str, str]:
    cid = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(rng.randbytes(8))
    rkey = micros_to_tid(rng.randrange(_START, _END), rng.randrange(1024))
    return {"cid": cid.encode("base32"), "uri": f"at://{did}/{collection}/{rkey}"}


def _other_did(rng: random.Random) -> str:
    return "did:plc:" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24))


def _post(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {"text": " ".join(rng.choices(_WORDS, k=rng.randrange(1, 30)))}
    roll = rng.random()
    if roll < 0.3:
        root = _strong_ref(rng, _other_did(rng), "app.bsky.feed.post")
        value["reply"] = {"parent": root, "root": root}
    elif roll < 0.4:
        value["embed"] = {
            "$type": "app.bsky.embed.record",
            "record": _strong_ref(rng, _other_did(rng), "app.bsky.feed.post"),
        }
    elif roll < 0.6:
        blob = cbrrr.CID.cidv1_raw_sha256_32_from(rng.randbytes(8))
        image = {"$type": "blob", "ref": blob, "mimeType": "image/jpeg", "size": 1000}
        value["embed"] = {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": image}]}
    return value


def _value(rng: random.Random, collection: str) -> dict[str, Any]:
    if collection == "app.bsky.feed.post":
        return _post(rng)
    if collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
        return {"subject": _strong_ref(rng, _other_did(rng), "app.bsky.feed.post")}
    if collection in ("app.bsky.graph.follow", "app.bsky.graph.block"):
        return {"subject": _other_did(rng)}
    return {"subject": f"https://example.com/{rng.randrange(10**9)}", "tag": rng.randbytes(4)}


def generate_records(
    count: int, rng: random.Random, mix: RecordMix = RecordMix()
) -> dict[str, dict[str, Any]]:
    """``count`` records keyed ``"collection/rkey"``, including one profile when count > 0.

    Deterministic for a given ``rng`` state. Links inside records are ``cbrrr.CID``.
    """
    names = [name for name, _ in mix.collections]
    weights = [weight for _, weight in mix.collections]
    records: dict[str, dict[str, Any]] = {}
    if count > 0:
        records["app.bsky.actor.profile/self"] = {
            "$type": "app.bsky.actor.profile",
            "displayName": " ".join(rng.choices(_WORDS, k=2)),
        }
    while len(records) < count:
        collection = rng.choices(names, weights)[0]
        micros = rng.randrange(mix.start_micros, mix.end_micros)
        value = {"$type": collection, **_value(rng, collection)}
        _set_created_at(value, micros, rng, mix)
        records[f"{collection}/{micros_to_tid(micros, rng.randrange(1024))}"] = value
    return records


def _set_created_at(value: dict[str, Any], micros: int, rng: random.Random, mix: RecordMix) -> None:
    """createdAt from the record key's moment, or one of the anomalies clients produce."""
    roll = rng.random()
    if roll < mix.skewed:
        value["createdAt"] = _iso(
            micros + rng.choice((-1, 1)) * rng.randrange(1, 400) * 86_400_000_000
        )
    elif roll < mix.skewed + mix.missing:
        return
    elif roll < mix.skewed + mix.missing + mix.malformed:
        value["createdAt"] = rng.choice(("yesterday", "2024-13-45T00:00:00Z", "", 1700000000))
    elif roll < mix.skewed + mix.missing + mix.malformed + mix.future:
        value["createdAt"] = _iso(_END + rng.randrange(1, 5 * 365) * 86_400_000_000)
    else:
        value["createdAt"] = _iso(micros)
