"""What the real PDS is filled with for the integration tests: accounts, records, edits.

Several collections, non-TID record keys, links and byte strings in records, deletions
and putRecord rewrites, an empty repo and one big enough for a many-layered MST.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.realpds import Account, PdsClient, RepoSnapshot, WrittenRecord

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"
FOLLOW = "app.bsky.graph.follow"
PROFILE = "app.bsky.actor.profile"
THING = "com.example.thing"  # no lexicon: stored as given, links and bytes included

_BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
# Valid record keys that are not TIDs (record-key syntax allows . - _ : ~).
_ODD_RKEYS = ("self", "a:b", "x.y~z_1", "UPPER-lower", "2024-01-01", "~tilde")
_POST_BATCH = 50


@dataclass(frozen=True)
class AccountPlan:
    """How many records of each kind one account gets, and how many it then edits."""

    name: str
    posts: int = 0
    likes: int = 0
    reposts: int = 0
    follows: int = 0
    things: int = 0
    profile: bool = False
    deletes: int = 0  # per edited collection (posts, likes, things)
    updates: int = 0  # putRecord rewrites of existing posts and things


PLANS = (
    AccountPlan("alice", posts=120, likes=80, reposts=30, follows=40, things=30, profile=True,
                deletes=5, updates=4),
    AccountPlan("bob", posts=90, likes=70, reposts=25, follows=35, things=20, profile=True,
                deletes=3, updates=3),
    # ~1,300 records: with fanout 4 that is an MST of five or six layers.
    AccountPlan("carol", posts=650, likes=450, reposts=100, follows=80, things=20, profile=True,
                deletes=6, updates=3),
    AccountPlan("dave"),  # a repo with no records at all
)  # fmt: skip


def timestamp(minutes: float) -> str:
    """An RFC 3339 ``createdAt`` ``minutes`` after 2024-01-01, millisecond precision, UTC."""
    moment = _BASE_TIME + timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def post_text(name: str, index: int) -> str:
    """A post's text: unique per account and index (tests find it in the CAR by it)."""
    text = f"{name} post {index:04d} says hello"
    if index % 7 == 3:
        text += " — café ☕ 🦋 日本語"
    return text


def _strong_ref(ref: WrittenRecord) -> dict[str, str]:
    return {"uri": ref.uri, "cid": ref.cid}


def _post(name: str, index: int, rng: random.Random, pool: list[WrittenRecord]) -> dict[str, Any]:
    record: dict[str, Any] = {"text": post_text(name, index), "createdAt": timestamp(index)}
    if index % 5 == 1:
        record["langs"] = ["en", "ja"]
    if pool and index % 4 == 2:
        root = rng.choice(pool)
        record["reply"] = {"root": _strong_ref(root), "parent": _strong_ref(rng.choice(pool))}
    return record


def _thing(index: int, rng: random.Random, pool: list[WrittenRecord]) -> dict[str, Any]:
    thing: dict[str, Any] = {
        "n": index,
        "flag": index % 2 == 0,
        "nothing": None,
        "tags": [f"t{i}" for i in range(index % 4)],
        "nested": {"deep": {"list": [1, -2, {"x": "y"}]}},
        "createdAt": timestamp(10_000 + index),
    }
    if pool and index % 3 == 0:
        thing["ref"] = {"$link": rng.choice(pool).cid}  # a real CID link (tag 42)
    if index % 3 == 1:
        thing["data"] = {"$bytes": base64.b64encode(bytes([index, 0, 255])).decode().rstrip("=")}
    return thing


def _thing_rkey(index: int) -> str:
    return _ODD_RKEYS[index] if index < len(_ODD_RKEYS) else f"thing-{index:04d}"


def _fake_did(rng: random.Random) -> str:
    return "did:plc:" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=24))


def populate(client: PdsClient, plans: tuple[AccountPlan, ...] = PLANS) -> dict[str, RepoSnapshot]:
    """Create the planned accounts and records, edit some, and snapshot every repo."""
    accounts = {plan.name: client.create_account(plan.name) for plan in plans}
    rngs = {plan.name: random.Random(plan.name) for plan in plans}
    posts: dict[str, list[WrittenRecord]] = {}
    pool: list[WrittenRecord] = []  # every post so far, any account: subjects of likes etc.

    # Posts first, then everything that refers to posts. Posts go in small batches so
    # that replies in later batches can point at the CIDs of earlier ones.
    for plan in plans:
        rng, written = rngs[plan.name], list[WrittenRecord]()
        for start in range(0, plan.posts, _POST_BATCH):
            batch = [
                (POST, None, _post(plan.name, i, rng, pool + written))
                for i in range(start, min(plan.posts, start + _POST_BATCH))
            ]
            written += client.apply_creates(accounts[plan.name], batch)
        posts[plan.name] = written
        pool += written

    others = [a.did for a in accounts.values()]
    for plan in plans:
        rng = rngs[plan.name]
        creates: list[tuple[str, str | None, Mapping[str, Any]]] = []
        for i in range(plan.likes):
            like = {"subject": _strong_ref(rng.choice(pool)), "createdAt": timestamp(2_000 + i)}
            creates.append((LIKE, None, like))
        for i in range(plan.reposts):
            repost = {"subject": _strong_ref(rng.choice(pool)), "createdAt": timestamp(4_000 + i)}
            creates.append((REPOST, None, repost))
        for i in range(plan.follows):
            subject = others[i] if i < len(others) else _fake_did(rng)
            creates.append((FOLLOW, None, {"subject": subject, "createdAt": timestamp(6_000 + i)}))
        creates += [(THING, _thing_rkey(i), _thing(i, rng, pool)) for i in range(plan.things)]
        if plan.profile:
            profile = {"displayName": f"{plan.name.title()} ✨", "description": "made by tests"}
            creates.append((PROFILE, "self", profile))
        client.apply_creates(accounts[plan.name], creates)

    snapshots: dict[str, RepoSnapshot] = {}
    for plan in plans:
        account = accounts[plan.name]
        deleted, updated = _edit(client, account, plan, posts[plan.name])
        snapshots[plan.name] = RepoSnapshot.take(client, account, deleted=deleted, updated=updated)
    return snapshots


def _edit(
    client: PdsClient, account: Account, plan: AccountPlan, posts: list[WrittenRecord]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Delete and rewrite some records (the CAR must show only the latest state).

    Returns the ``(collection, rkey)`` keys deleted and those rewritten by putRecord.
    """
    deleted: set[tuple[str, str]] = set()
    updated: set[tuple[str, str]] = set()
    if not posts:
        return deleted, updated
    likes = [rec["uri"].rsplit("/", 1)[1] for rec in client.list_records(account.did, LIKE)]
    things = [f"thing-{i:04d}" for i in range(len(_ODD_RKEYS), plan.things)]
    victims = [(POST, p.rkey) for p in posts[len(posts) - plan.deletes :]]
    victims += [(LIKE, rkey) for rkey in likes[: plan.deletes]]
    victims += [(THING, rkey) for rkey in things[: plan.deletes]]
    for collection, rkey in victims:
        client.delete_record(account, collection, rkey)
        deleted.add((collection, rkey))
    for i, post in enumerate(posts[: plan.updates]):
        record = {"text": post_text(plan.name, i) + " (edited)", "createdAt": timestamp(i + 0.5)}
        client.put_record(account, POST, post.rkey, record)
        updated.add((POST, post.rkey))
    for i in range(min(plan.updates, plan.things)):
        client.put_record(account, THING, _thing_rkey(i), {"n": -i, "edited": True})
        updated.add((THING, _thing_rkey(i)))
    if plan.profile:
        client.put_record(account, PROFILE, "self", {"displayName": f"{plan.name} (edited)"})
        updated.add((PROFILE, "self"))
    return deleted, updated
