"""``StoreIdentityCache``: the resolver's synchronous ``IdentityCache``, kept in the store.

``IdentityCache`` is synchronous because the resolver consults it on the event loop for
every DID; a database round trip there would serialize resolution behind the store. So
this adapter answers from memory and moves entries to and from the store in bulk, at
moments the caller chooses:

- ``await cache.prefetch(dids, now)`` before resolving a chunk of DIDs loads their stored,
  unexpired entries (one query per few hundred DIDs);
- ``get`` / ``put`` / ``expire`` work on memory; ``put`` also marks the entry dirty and
  ``expire`` schedules the same expiry in the store;
- ``await cache.flush()`` writes dirty entries (and the expiry) in one go; call it after
  each chunk and at shutdown. Entries put since the last flush are lost in a crash, which
  only costs resolving those DIDs again.

Memory stays bounded: entries live in a :class:`MemoryIdentityCache` of ``max_entries``
(oldest first out), plus dirty entries until the next flush.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from bsky_backfill.atproto.identity import CachedIdentity, MemoryIdentityCache
from bsky_backfill.state.protocol import IdentityStore

if TYPE_CHECKING:
    from bsky_backfill.atproto.identity import IdentityCache

__all__ = ["StoreIdentityCache"]


class StoreIdentityCache:
    """An :class:`~bsky_backfill.atproto.identity.IdentityCache` backed by an
    :class:`~bsky_backfill.state.protocol.IdentityStore`. Not thread-safe (one event loop);
    the store belongs to the caller."""

    def __init__(self, store: IdentityStore, *, max_entries: int = 100_000) -> None:
        self._store = store
        self._memory = MemoryIdentityCache(max_entries)
        self._dirty: dict[str, CachedIdentity] = {}
        self._expire_at: float | None = None

    def get(self, did: str, now: float) -> CachedIdentity | None:
        """The entry for ``did`` in memory unless missing or expired at ``now``."""
        entry = self._memory.get(did, now)
        if entry is None:  # evicted from memory but not yet written: still the answer
            unsaved = self._dirty.get(did)
            entry = unsaved if unsaved is not None and unsaved.expires_at > now else None
        return entry

    def put(self, entry: CachedIdentity) -> None:
        """Keep ``entry`` in memory, and in the store at the next :meth:`flush`."""
        self._memory.put(entry)
        self._dirty[entry.did] = entry

    def expire(self, now: float) -> int:
        """Drop entries expired at ``now`` from memory (returning how many) and from the
        store at the next :meth:`flush`."""
        self._expire_at = now if self._expire_at is None else max(self._expire_at, now)
        self._dirty = {did: e for did, e in self._dirty.items() if e.expires_at > now}
        return self._memory.expire(now)

    async def prefetch(self, dids: Iterable[str], now: float) -> int:
        """Load the stored, unexpired entries of ``dids`` not already in memory; return how
        many were loaded. Raises ``StoreUnavailable`` / ``StoreError``."""
        wanted = [did for did in dict.fromkeys(dids) if self.get(did, now) is None]
        if not wanted:
            return 0
        loaded = await self._store.load_identities(wanted, now)
        for entry in loaded:
            if entry.did not in self._dirty:  # a newer answer is waiting to be written
                self._memory.put(entry)
        return len(loaded)

    async def flush(self) -> int:
        """Write dirty entries and the pending expiry to the store; return how many entries
        were written. On failure (``StoreUnavailable`` ...) nothing is forgotten: the next
        flush tries again. Entries put while the write is in flight wait for the next."""
        dirty, self._dirty = self._dirty, {}
        expire_at, self._expire_at = self._expire_at, None
        try:
            if dirty:
                await self._store.save_identities(dirty.values())
            if expire_at is not None:
                await self._store.expire_identities(expire_at)
        except BaseException:
            self._dirty = dirty | self._dirty  # entries put meanwhile are newer: they win
            if expire_at is not None:
                self._expire_at = max(expire_at, self._expire_at or expire_at)
            raise
        return len(dirty)


if TYPE_CHECKING:

    def _satisfies_protocol(cache: StoreIdentityCache) -> IdentityCache:
        return cache  # mypy checks the adapter against the resolver's interface here
