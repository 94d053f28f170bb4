"""``SqlJobStore``: the job store on SQLite (default) or PostgreSQL, through SQLAlchemy.

Each public method is one transaction (bulk writes: one per chunk) run by :meth:`_tx`,
which is also where every database exception is translated (``translate.store_errors``).
A writing method, once called, finishes before a cancellation reaches its caller: a
transaction cut mid-statement would keep SQLite's write lock until its connection closes.
The SQL lives in ``jobs``, ``dids``, ``batches``, ``progress`` and ``identities``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bsky_backfill.aio import finishes_before_cancel
from bsky_backfill.atproto.identity import CachedIdentity
from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.errors import BatchRejected
from bsky_backfill.state.model import (
    UNAVAILABLE_STATES,
    Claim,
    Job,
    JobState,
    Recovery,
    format_batch_id,
    parse_batch_id,
)
from bsky_backfill.state.sql import batches, dids, identities, jobs, progress
from bsky_backfill.state.sql._util import IN_CHUNK, chunked
from bsky_backfill.state.sql.engine import (
    READ_ONLY,
    StoreOptions,
    analyze,
    create_store_engine,
    ensure_schema,
    store_url,
)
from bsky_backfill.state.sql.translate import store_errors, transaction

if TYPE_CHECKING:
    from bsky_backfill.state.protocol import JobStore

__all__ = ["SqlJobStore"]

_REPOS_PAGE = 1_000
_ANALYZE_AFTER = 10_000  # DIDs added at once that make planner statistics stale


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlJobStore:
    """The :class:`~bsky_backfill.state.protocol.JobStore` on a SQL database.

    Open with ``await SqlJobStore.open(path_or_url)``; close with ``aclose`` or use it as
    an async context manager. Safe for concurrent use by many tasks, processes and (on
    PostgreSQL) machines; method contracts are in ``bsky_backfill.state.protocol``.
    """

    def __init__(
        self, engine: AsyncEngine, options: StoreOptions, clock: Callable[[], datetime]
    ) -> None:
        """Use :meth:`open`, which also creates the schema."""
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._options = options
        self._clock = clock
        self._job_keys: dict[str, int] = {}  # job ids never change their key

    @classmethod
    async def open(
        cls,
        target: str | Path,
        options: StoreOptions | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> SqlJobStore:
        """Open the store at ``target`` (a SQLite file path, or a ``sqlite://`` /
        ``postgresql://`` URL), creating its tables if missing. Raises ``ConfigError`` for a
        bad URL, ``StoreUnavailable`` if the database cannot be reached, ``StoreError`` for
        a schema of another version. ``clock`` (aware UTC) is for tests."""
        options = options or StoreOptions()
        with store_errors("open"):
            engine = create_store_engine(store_url(target), options)
        try:
            with store_errors("open"):
                await ensure_schema(engine, options.schema)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, options, clock)

    async def aclose(self) -> None:
        """Close every connection. Idempotent."""
        with store_errors("close"):
            await self._engine.dispose()

    async def __aenter__(self) -> SqlJobStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @asynccontextmanager
    async def _tx(
        self, operation: str, *, read_only: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on success and rolled back on any exception; the one
        place database exceptions are translated."""
        async with transaction(self._reader if read_only else self._engine, operation) as conn:
            yield conn

    async def _key(self, conn: AsyncConnection, job_id: str) -> int:
        key = self._job_keys.get(job_id)
        if key is None:
            key = self._job_keys[job_id] = await jobs.job_key(conn, job_id)
        return key

    async def _job_key(self, job_id: str, operation: str) -> int:
        """The job's key in its own short transaction (for methods that chunk)."""
        if job_id in self._job_keys:
            return self._job_keys[job_id]
        async with self._tx(operation, read_only=True) as conn:
            return await self._key(conn, job_id)

    # --- jobs ----------------------------------------------------------------------------

    @finishes_before_cancel
    async def create_job(self, job_id: str, name: str, config_text: str, config_hash: str) -> Job:
        async with self._tx("create_job") as conn:
            return await jobs.create_job(
                conn, job_id, name, config_text, config_hash, self._clock()
            )

    async def get_job(self, job_id: str) -> Job | None:
        async with self._tx("get_job", read_only=True) as conn:
            return await jobs.get_job(conn, job_id)

    async def list_jobs(self) -> list[Job]:
        async with self._tx("list_jobs", read_only=True) as conn:
            return await jobs.list_jobs(conn)

    @finishes_before_cancel
    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> Job:
        async with self._tx("set_job_state") as conn:
            return await jobs.set_job_state(conn, job_id, state, error, self._clock())

    # --- DIDs ----------------------------------------------------------------------------

    @finishes_before_cancel
    async def add_dids(self, job_id: str, dids_: Iterable[str]) -> int:
        key = await self._job_key(job_id, "add_dids")
        added = 0
        for chunk in chunked(dids_, self._options.chunk_size):
            async with self._tx("add_dids") as conn:
                added += await dids.add_dids(conn, key, chunk)
        if added >= _ANALYZE_AFTER:
            async with self._tx("add_dids") as conn:
                await analyze(conn, "dids", self._options.schema)
        return added

    @finishes_before_cancel
    async def add_final(
        self, job_id: str, did: str, state: DidState, error: str | None = None
    ) -> bool:
        async with self._tx("add_final") as conn:
            return await dids.add_final(conn, await self._key(conn, job_id), did, state, error)

    @finishes_before_cancel
    async def set_identities(
        self, job_id: str, identities_: Iterable[tuple[str, str | None, str]]
    ) -> None:
        key = await self._job_key(job_id, "set_identities")
        for chunk in chunked(identities_, self._options.chunk_size):
            async with self._tx("set_identities") as conn:
                await dids.set_identities(conn, key, chunk)

    async def unresolved(self, job_id: str, *, limit: int, after: str | None = None) -> list[str]:
        async with self._tx("unresolved", read_only=True) as conn:
            return await dids.unresolved(conn, await self._key(conn, job_id), limit, after)

    @finishes_before_cancel
    async def claim(
        self, job_id: str, limit: int, *, worker_id: str, host: str | None = None
    ) -> list[Claim]:
        async with self._tx("claim") as conn:
            key = await self._key(conn, job_id)
            return await dids.claim(conn, key, limit, worker_id, host, self._clock())

    async def pending_hosts(self, job_id: str) -> dict[str, int]:
        async with self._tx("pending_hosts", read_only=True) as conn:
            return await dids.pending_hosts(conn, await self._key(conn, job_id), self._clock())

    @finishes_before_cancel
    async def release(
        self, job_id: str, dids_: Iterable[str], *, worker_id: str | None = None
    ) -> int:
        async with self._tx("release") as conn:
            key = await self._key(conn, job_id)
            released = 0
            for chunk in chunked(dids_, IN_CHUNK):
                released += await dids.release(conn, key, chunk, worker_id)
            return released

    async def holders(self, job_id: str) -> list[str]:
        async with self._tx("holders", read_only=True) as conn:
            return await dids.holders(conn, await self._key(conn, job_id))

    @finishes_before_cancel
    async def retry_later(
        self,
        job_id: str,
        did: str,
        error_kind: str,
        error_detail: str,
        *,
        not_before: datetime | None = None,
        worker_id: str | None = None,
    ) -> bool:
        async with self._tx("retry_later") as conn:
            key = await self._key(conn, job_id)
            return await dids.retry_later(
                conn, key, did, error_kind, error_detail, not_before, worker_id
            )

    @finishes_before_cancel
    async def fail(self, job_id: str, did: str, error_kind: str, error_detail: str) -> bool:
        async with self._tx("fail") as conn:
            key = await self._key(conn, job_id)
            return await dids.finalize(conn, key, did, DidState.FAILED, error_kind, error_detail)

    @finishes_before_cancel
    async def finish_unavailable(
        self, job_id: str, did: str, state: DidState, error: str | None = None
    ) -> bool:
        if DidState(state) not in UNAVAILABLE_STATES:
            raise ValueError(f"{state} is not an unavailable state")
        async with self._tx("finish_unavailable") as conn:
            key = await self._key(conn, job_id)
            return await dids.finalize(conn, key, did, state, DidState(state).value, error)

    async def superseded_of(self, job_id: str, dids_: Iterable[str]) -> dict[str, str]:
        async with self._tx("superseded_of", read_only=True) as conn:
            key = await self._key(conn, job_id)
            found: dict[str, str] = {}
            for chunk in chunked(dids_, IN_CHUNK):
                olds = await dids.superseded_of(conn, key, chunk)
                found.update({did: format_batch_id(seq) for did, seq in olds.items()})
            return found

    @finishes_before_cancel
    async def reopen(self, job_id: str, dids_: Iterable[str]) -> int:
        async with self._tx("reopen") as conn:
            key = await self._key(conn, job_id)
            reopened = 0
            for chunk in chunked(dids_, IN_CHUNK):
                reopened += await dids.reopen(conn, key, chunk)
            return reopened

    # --- batches -------------------------------------------------------------------------

    @finishes_before_cancel
    async def next_batch_id(self, job_id: str, *, worker_id: str) -> str:
        async with self._tx("next_batch_id") as conn:
            key = await self._key(conn, job_id)
            return format_batch_id(await batches.next_batch(conn, key, worker_id, self._clock()))

    @finishes_before_cancel
    async def commit_batch(self, job_id: str, batch_id: str, repo_rows: Sequence[RepoRow]) -> None:
        seq = self._seq(job_id, batch_id)
        batches.check_rows(repo_rows)
        async with self._tx("commit_batch") as conn:
            key = await self._key(conn, job_id)
            await batches.commit_batch(conn, key, job_id, seq, repo_rows, self._clock())

    @finishes_before_cancel
    async def mark_published(self, job_id: str, batch_id: str) -> None:
        seq = self._seq(job_id, batch_id)
        async with self._tx("mark_published") as conn:
            key = await self._key(conn, job_id)
            await batches.mark_published(conn, key, job_id, seq, self._clock())

    async def superseded(self, job_id: str, batch_id: str) -> dict[str, str]:
        seq = self._seq(job_id, batch_id)
        async with self._tx("superseded", read_only=True) as conn:
            return await batches.superseded(conn, await self._key(conn, job_id), seq)

    @finishes_before_cancel
    async def recover(self, job_id: str, *, worker_id: str | None = None) -> Recovery:
        async with self._tx("recover") as conn:
            return await batches.recover(conn, await self._key(conn, job_id), worker_id)

    async def unpublished(self, job_id: str) -> list[str]:
        async with self._tx("unpublished", read_only=True) as conn:
            return await batches.unpublished(conn, await self._key(conn, job_id))

    @staticmethod
    def _seq(job_id: str, batch_id: str) -> int:
        seq = parse_batch_id(batch_id)
        if seq is None:
            raise BatchRejected(
                f"{batch_id!r} is not a batch id this store issues",
                job_id=job_id,
                batch_id=batch_id,
            )
        return seq

    # --- progress ------------------------------------------------------------------------

    async def counts(self, job_id: str) -> dict[DidState, int]:
        async with self._tx("counts", read_only=True) as conn:
            return await progress.counts(conn, await self._key(conn, job_id))

    async def records_total(self, job_id: str) -> int:
        async with self._tx("records_total", read_only=True) as conn:
            return await progress.records_total(conn, await self._key(conn, job_id))

    async def host_counts(self, job_id: str) -> dict[str | None, dict[DidState, int]]:
        async with self._tx("host_counts", read_only=True) as conn:
            return await progress.host_counts(conn, await self._key(conn, job_id))

    async def repos(self, job_id: str, *, unbatched: bool = False) -> AsyncIterator[RepoRow]:
        key = await self._job_key(job_id, "repos")
        after: str | None = None
        while True:
            async with self._tx("repos", read_only=True) as conn:
                page = await progress.repos_page(conn, key, after, _REPOS_PAGE, unbatched)
            for row in page:
                yield row
            if len(page) < _REPOS_PAGE:
                return
            after = page[-1].did

    # --- identity cache ------------------------------------------------------------------

    async def load_identities(self, dids_: Iterable[str], now: float) -> list[CachedIdentity]:
        found: list[CachedIdentity] = []
        async with self._tx("load_identities", read_only=True) as conn:
            for chunk in chunked(dids_, IN_CHUNK):
                found += await identities.load(conn, chunk, now)
        return found

    @finishes_before_cancel
    async def save_identities(self, entries: Iterable[CachedIdentity]) -> None:
        for chunk in chunked(entries, self._options.chunk_size):
            async with self._tx("save_identities") as conn:
                await identities.save(conn, chunk)

    @finishes_before_cancel
    async def expire_identities(self, now: float) -> int:
        async with self._tx("expire_identities") as conn:
            return await identities.expire(conn, now)


if TYPE_CHECKING:

    def _satisfies_protocol(store: SqlJobStore) -> JobStore:
        return store  # mypy checks SqlJobStore against every JobStore method here
