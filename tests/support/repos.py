"""Small signed repos for reader tests, built with the simulated network's writer."""

from __future__ import annotations

import random
from typing import Any

import cbrrr
from bsky_backfill.atproto.syntax import micros_to_tid

from bsky_backfill.atproto.cid import read_varint
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.fakenet.repo_writer import RepoExport, build_repo

__all__ = ["DID", "KEY", "frame_ends", "make_records", "make_repo"]

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
KEY = Keypair.from_seed("k256", "reader-tests")
COLLECTIONS = (
    "app.bsky.actor.profile",
    "app.bsky.feed.like",
    "app.bsky.feed.post",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
    "com.example.thing",
)


def make_records(
    count: int, *, seed: int = 0, collections: tuple[str, ...] = COLLECTIONS
) -> dict[str, dict[str, Any]]:
    """``count`` records spread over ``collections``; some posts carry a blob link."""
    rng = random.Random(seed)
    start = 1_700_000_000_000_000
    records: dict[str, dict[str, Any]] = {}
    while len(records) < count:
        collection = rng.choice(collections)
        micros = start + rng.randrange(10**13)
        rkey = (
            "self"
            if collection == "app.bsky.actor.profile"
            else micros_to_tid(micros, rng.randrange(1024))
        )
        value: dict[str, Any] = {"$type": collection, "createdAt": "2024-05-06T07:08:09.123Z"}
        if collection == "app.bsky.feed.post":
            value["text"] = f"post {len(records)} ✨"
            if rng.random() < 0.3:
                blob = cbrrr.CID.cidv1_raw_sha256_32_from(rng.randbytes(16))
                value["embed"] = {"images": [{"image": {"$type": "blob", "ref": blob, "size": 9}}]}
        if collection == "com.example.thing":
            value["payload"] = rng.randbytes(8)
        records[f"{collection}/{rkey}"] = value
    return records


def make_repo(count: int = 50, *, seed: int = 0, key: Keypair = KEY, **options: Any) -> RepoExport:
    """A signed repo of ``count`` records; ``options`` go to ``build_repo``."""
    return build_repo(
        DID,
        make_records(count, seed=seed),
        rev=micros_to_tid(1_750_000_000_000_000),
        sign=key.sign,
        **options,
    )


def frame_ends(car: bytes) -> list[int]:
    """Byte offsets where each CAR frame ends; the first is the header's end."""
    ends, pos = [], 0
    while pos < len(car):
        length, pos = read_varint(car, pos)
        pos += length
        ends.append(pos)
    return ends
