"""Repo exports for the servers: built off the event loop, shared, and indexed for paging.

Building a repo is CPU work (a 20k-record repo takes over a second), so it runs in worker
threads on a snapshot (``World.export_builder``) while the loop keeps answering other
hosts; concurrent requests for one account share one build. The commit CID of each
account's latest export is remembered apart from the export cache, so listRepos and
getLatestCommit do not rebuild evicted repos.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final

from bsky_backfill.fakenet.repo_writer import RepoExport
from bsky_backfill.fakenet.world import Account, World

__all__ = ["RecordPage", "RepoStore"]

_KEY_LISTS: Final = 64  # sorted key lists kept for paging (one per recently listed repo)


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of a collection: ``(rkey, record CID bytes, record block)`` and the cursor
    for the next page (the last rkey; None when the page is empty, as the PDS does)."""

    records: list[tuple[str, bytes, bytes]]
    cursor: str | None


class RepoStore:
    """Async access to the world's exports. Lives on one event loop; ``executor`` runs the
    builds (the caller owns and shuts it down)."""

    def __init__(self, world: World, executor: Executor) -> None:
        self._world = world
        self._executor = executor
        self._building: dict[tuple[int, str], asyncio.Future[RepoExport]] = {}
        self._heads: dict[int, tuple[str, str]] = {}  # account index -> (rev, commit CID)
        self._keys: OrderedDict[tuple[int, str], list[str]] = OrderedDict()

    async def export(self, account: Account) -> RepoExport:
        """The account's current export, built in a worker thread if not cached."""
        hit = self._world.cached_export(account)
        if hit is not None:
            return hit
        key = (account.seed.index, account.rev)
        pending = self._building.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, self._world.export_builder(account))
            self._building[key] = pending
            pending.add_done_callback(lambda _: self._building.pop(key, None))
        # shield: one cancelled request must not cancel the build others are waiting for.
        export = await asyncio.shield(pending)
        self._world.add_export(account, export)
        self._heads[account.seed.index] = (export.rev, export.commit_cid.encode("base32"))
        return export

    async def head(self, account: Account) -> str:
        """The CID (base32 string) of the account's current commit."""
        known = self._heads.get(account.seed.index)
        if known is not None and known[0] == account.rev:
            return known[1]
        export = await self.export(account)
        return export.commit_cid.encode("base32")

    async def page(
        self, account: Account, collection: str, limit: int, cursor: str | None, reverse: bool
    ) -> RecordPage:
        """Records of ``collection`` by rkey, newest (highest) first unless ``reverse``,
        strictly after ``cursor`` in that order — the reference PDS's listRecords."""
        export = await self.export(account)
        keys = self._sorted_keys(account, export)
        prefix = collection + "/"
        # Every "collection/rkey" of one collection is one run of the sorted keys; "0"
        # is the character after "/", so the run ends before prefix[:-1] + "0".
        lo = bisect.bisect_left(keys, prefix)
        hi = bisect.bisect_left(keys, collection + "0", lo)
        if cursor is not None:
            if reverse:
                lo = bisect.bisect_right(keys, prefix + cursor, lo, hi)
            else:
                hi = bisect.bisect_left(keys, prefix + cursor, lo, hi)
        chosen = keys[lo : min(lo + limit, hi)] if reverse else keys[max(lo, hi - limit) : hi][::-1]
        records = []
        for key in chosen:
            cid = export.record_cids[key].cid_bytes
            records.append((key[len(prefix) :], cid, export.blocks[cid]))
        return RecordPage(records, records[-1][0] if records else None)

    async def collections(self, account: Account) -> list[str]:
        """The collections the account's repo holds, sorted."""
        export = await self.export(account)
        keys = self._sorted_keys(account, export)
        return sorted({key.split("/", 1)[0] for key in keys})

    def _sorted_keys(self, account: Account, export: RepoExport) -> list[str]:
        key = (account.seed.index, export.rev)
        keys = self._keys.get(key)
        if keys is None:
            keys = self._keys[key] = sorted(export.record_cids)
            if len(self._keys) > _KEY_LISTS:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return keys
