"""The simulated network's state: accounts, their repos, and every change made to them.

Generated accounts (``population``) are the starting point; a change (create / update /
delete a record, a new status, a move to another host) materialises that account's repo
and bumps its rev. Repo exports are built on demand and kept in a bounded LRU cache.
Not thread-safe: the fakenet server runs it on one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bsky_backfill.atproto.syntax import int_to_tid, tid_to_int
from bsky_backfill.fakenet.population import AccountSeed, PopulationSpec, Status, account_seed
from bsky_backfill.fakenet.repo_writer import RepoExport, build_repo

__all__ = ["Account", "World"]


@dataclass
class Account:
    """An account as it is now: generated fields plus any changes made since."""

    seed: AccountSeed
    status: Status
    host: int
    changed_rev: str | None = None  # None: still the generated rev
    records: dict[str, dict[str, Any]] | None = None  # None: still as generated
    history: list[tuple[str, frozenset[bytes]]] = field(default_factory=list)
    """``(rev, block CIDs)`` of each earlier version, for ``getRepo?since=``."""

    @property
    def did(self) -> str:
        return self.seed.did

    @property
    def rev(self) -> str:
        return self.changed_rev or self.seed.rev

    @property
    def changed(self) -> bool:
        return self.records is not None

    def current_records(self) -> dict[str, dict[str, Any]]:
        return self.records if self.records is not None else self.seed.records()


class World:
    """All accounts of one simulated network, by DID and by host."""

    def __init__(
        self,
        spec: PopulationSpec,
        *,
        web_hosts: list[str] | None = None,
        cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.spec = spec
        self._accounts: list[Account] = []
        self._by_did: dict[str, int] = {}
        for index in range(spec.total_accounts):
            seed = account_seed(spec, index, web_hosts)
            self._accounts.append(Account(seed, seed.status, seed.host))
            self._by_did[seed.did] = index
        self._cache: OrderedDict[tuple[int, str], RepoExport] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    def __len__(self) -> int:
        return len(self._accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts)

    def get(self, did: str) -> Account | None:
        index = self._by_did.get(did)
        return None if index is None else self._accounts[index]

    def on_host(self, host: int) -> list[Account]:
        """Accounts the host serves now (any status), in index order."""
        return [a for a in self._accounts if a.host == host]

    def export(self, account: Account) -> RepoExport:
        """The account's current repo export (cached by rev)."""
        hit = self.cached_export(account)
        if hit is not None:
            return hit
        export = self.export_builder(account)()
        self.add_export(account, export)
        return export

    def cached_export(self, account: Account) -> RepoExport | None:
        """The account's current export if it is cached; never builds."""
        key = (account.seed.index, account.rev)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def export_builder(self, account: Account) -> Callable[[], RepoExport]:
        """A function that builds the account's current export from a snapshot taken now.

        It touches no World state, so it may run in a worker thread while the world keeps
        changing (building a big repo takes seconds); hand its result to :meth:`add_export`.
        """
        seed, rev = account.seed, account.rev
        # Changed records are copied now (put/delete replace values, never mutate them);
        # generated ones, and the key (~1 ms to derive), are pure functions of the seed,
        # made by the builder itself.
        snapshot = dict(account.records) if account.records is not None else None

        def build() -> RepoExport:
            return build_repo(
                seed.did,
                snapshot if snapshot is not None else seed.records(),
                rev=rev,
                sign=seed.keypair.sign,
                order="newest_first",
            )

        return build

    def add_export(self, account: Account, export: RepoExport) -> None:
        """Cache an export built by :meth:`export_builder` (under the rev it was built for)."""
        key = (account.seed.index, export.rev)
        if key in self._cache:
            return
        self._cache[key] = export
        self._cached += len(export.car)
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old.car)

    def blocks_since(self, account: Account, since: str) -> frozenset[bytes] | None:
        """Block CIDs the account had at rev ``since`` (None: unknown rev, send everything)."""
        known = [blocks for rev, blocks in account.history if rev <= since]
        return known[-1] if known else None

    # -- changes ------------------------------------------------------------------------

    def _materialise(self, account: Account) -> dict[str, dict[str, Any]]:
        if account.records is None:
            account.records = account.seed.records()
        return account.records

    def _bump(self, account: Account) -> None:
        before = self.export(account)
        account.history.append((account.rev, frozenset(before.blocks)))
        account.changed_rev = int_to_tid(tid_to_int(account.rev) + (1 << 10))  # 1 µs later

    def put_record(self, did: str, collection: str, rkey: str, value: dict[str, Any]) -> str:
        """Create or replace a record; returns the new rev."""
        account = self._require(did)
        self._bump(account)
        self._materialise(account)[f"{collection}/{rkey}"] = value
        return account.rev

    def delete_record(self, did: str, collection: str, rkey: str) -> str:
        """Delete a record (KeyError if absent); returns the new rev."""
        account = self._require(did)
        records = self._materialise(account)
        if f"{collection}/{rkey}" not in records:
            raise KeyError(f"{did} has no record {collection}/{rkey}")
        self._bump(account)
        del records[f"{collection}/{rkey}"]
        return account.rev

    def set_status(self, did: str, status: Status) -> None:
        self._require(did).status = status

    def move(self, did: str, host: int) -> None:
        """Migrate the account: the old host will answer RepoNotFound."""
        if not 0 <= host < self.spec.hosts:
            raise ValueError(f"host {host} is outside 0..{self.spec.hosts - 1}")
        self._require(did).host = host

    def _require(self, did: str) -> Account:
        account = self.get(did)
        if account is None:
            raise KeyError(f"no account {did}")
        return account
