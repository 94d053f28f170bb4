"""The persisted identity cache: the store's table and the resolver-facing adapter."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from bsky_backfill.atproto.identity import CachedIdentity, Identity, SigningKey
from bsky_backfill.errors import StoreUnavailable
from bsky_backfill.state import SqlJobStore, StoreIdentityCache
from bsky_backfill.state.sql.identities import decode_entry, encode_entry
from tests.unit.state.conftest import Backend

NOW = 1_800_000_000.0
KEY = SigningKey("multikey", "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme")


def identity_entry(
    did: str, expires_at: float = NOW + 100, handle: str | None = "a.test"
) -> CachedIdentity:
    return CachedIdentity(
        did, expires_at, identity=Identity(did, "https://pds.one.test", KEY, handle)
    )


def failure_entry(did: str, expires_at: float = NOW + 100) -> CachedIdentity:
    return CachedIdentity(did, expires_at, failure="tombstoned", message="DID is tombstoned")


@pytest.mark.parametrize(
    "entry",
    [
        identity_entry("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
        identity_entry("did:web:example.com", handle=None),
        CachedIdentity(
            "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
            NOW,
            identity=Identity(
                "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
                "https://pds.two.test",
                SigningKey("legacy-k256", "zQ3s"),
                "b.test",
            ),
        ),
        failure_entry("did:plc:cccccccccccccccccccccccc"),
    ],
)
def test_entry_codec_round_trip(entry: CachedIdentity) -> None:
    assert decode_entry(entry.did, entry.expires_at, encode_entry(entry)) == entry


@pytest.mark.parametrize("text", ["", "[]", '{"v": 2}', '{"v": 1}', '{"v": 1, "key": 3}'])
def test_unreadable_entries_are_missing(text: str) -> None:
    assert decode_entry("did:plc:x", NOW, text) is None


async def test_store_round_trip_and_expiry(store: SqlJobStore) -> None:
    fresh = identity_entry("did:plc:fresh", NOW + 100)
    stale = failure_entry("did:plc:stale", NOW - 1)
    await store.save_identities([fresh, stale, identity_entry("did:plc:fresh", NOW + 50)])
    assert await store.load_identities(["did:plc:fresh", "did:plc:stale", "did:x"], NOW) == [
        identity_entry("did:plc:fresh", NOW + 50)
    ]
    await store.save_identities([fresh])  # replaces
    assert await store.load_identities(["did:plc:fresh"], NOW) == [fresh]
    assert await store.expire_identities(NOW) == 1
    assert await store.expire_identities(NOW) == 0
    assert await store.load_identities(["did:plc:fresh"], NOW + 100) == []


async def test_adapter_persists_across_instances(backend: Backend, store: SqlJobStore) -> None:
    cache = StoreIdentityCache(store)
    entries = [identity_entry(f"did:plc:{i:024d}") for i in range(1_200)]
    for entry in entries:
        cache.put(entry)
    cache.put(failure_entry("did:plc:dead"))
    assert cache.get(entries[0].did, NOW) == entries[0]
    assert await cache.flush() == 1_201
    assert await cache.flush() == 0

    async with await backend.open() as other:
        fresh = StoreIdentityCache(other)
        assert fresh.get(entries[0].did, NOW) is None  # memory only until prefetched
        wanted = [e.did for e in entries] + ["did:plc:dead", "did:plc:never"]
        assert await fresh.prefetch(wanted, NOW) == 1_201
        assert await fresh.prefetch(wanted, NOW) == 0  # already in memory
        assert [fresh.get(e.did, NOW) for e in entries] == entries
        assert fresh.get("did:plc:dead", NOW) == failure_entry("did:plc:dead")
        assert fresh.get("did:plc:never", NOW) is None
        assert await fresh.prefetch(["did:plc:dead"], NOW + 100) == 0  # expired


async def test_adapter_expiry_reaches_the_store(store: SqlJobStore) -> None:
    cache = StoreIdentityCache(store)
    cache.put(identity_entry("did:plc:short", NOW + 10))
    cache.put(identity_entry("did:plc:long", NOW + 1_000))
    await cache.flush()
    assert cache.expire(NOW + 10) == 1
    assert cache.get("did:plc:short", NOW) is None
    await cache.flush()
    assert [e.did for e in await store.load_identities(["did:plc:short", "did:plc:long"], 0)] == [
        "did:plc:long"
    ]


class FlakyStore:
    """An IdentityStore whose writes fail until told otherwise."""

    def __init__(self) -> None:
        self.saved: dict[str, CachedIdentity] = {}
        self.down = True

    async def load_identities(self, dids: Iterable[str], now: float) -> list[CachedIdentity]:
        return [self.saved[d] for d in dids if d in self.saved]

    async def save_identities(self, entries: Iterable[CachedIdentity]) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.saved.update((e.did, e) for e in entries)

    async def expire_identities(self, now: float) -> int:
        return 0


async def test_failed_flush_keeps_entries_for_the_next() -> None:
    flaky = FlakyStore()
    cache = StoreIdentityCache(flaky)
    cache.put(identity_entry("did:plc:one"))
    with pytest.raises(StoreUnavailable):
        await cache.flush()
    cache.put(identity_entry("did:plc:one", NOW + 500))  # newer than the unsaved one
    flaky.down = False
    assert await cache.flush() == 1
    assert flaky.saved == {"did:plc:one": identity_entry("did:plc:one", NOW + 500)}


async def test_prefetch_does_not_overwrite_unsaved_answers() -> None:
    flaky = FlakyStore()
    flaky.saved["did:plc:one"] = identity_entry("did:plc:one", NOW + 5)
    cache = StoreIdentityCache(flaky, max_entries=1)
    cache.put(identity_entry("did:plc:one", NOW + 500))
    cache.put(identity_entry("did:plc:two"))  # evicts did:plc:one from memory
    await cache.prefetch(["did:plc:one"], NOW)
    assert cache.get("did:plc:one", NOW) == identity_entry("did:plc:one", NOW + 500)
