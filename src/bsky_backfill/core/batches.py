"""Gathers finished DIDs into batches and writes each exactly once: the engine's half of
the protocol in :mod:`bsky_backfill.state.protocol` (stage -> commit -> publish -> mark).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final

import structlog

from bsky_backfill.aio import finish_before_cancel
from bsky_backfill.core.models import RepoResult
from bsky_backfill.errors import BatchRejected
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.sinks.base import AsyncSink
from bsky_backfill.state.protocol import JobStore

__all__ = ["BATCH_ROWS", "BatchWriter"]

logger = structlog.get_logger(__name__)

BATCH_ROWS: Final = 100_000
"""Rows held in memory that make a batch full before ``batch_size`` DIDs do. A batch's rows
wait in memory (~1 KB each as Python objects) until it is written, and the next batch's
gather meanwhile: by DIDs alone, 100 accounts of 15k records each would hold 1.5M rows."""


@dataclass(slots=True)
class _Pending:
    result: RepoResult
    superseded: str | None


class BatchWriter:
    """Buffers results and publishes them in batches of ``batch_size`` DIDs or
    ``batch_rows`` rows in memory, whichever comes first (or on ``flush``).

    Not thread-safe; safe for many tasks of one event loop (flushes are serialised).
    """

    def __init__(
        self,
        store: JobStore,
        sink: AsyncSink,
        *,
        job_id: str,
        worker_id: str,
        batch_size: int,
        batch_rows: int = BATCH_ROWS,
        publish: bool = True,
        metrics: JobMetrics | None = None,
    ) -> None:
        """A batch is written once ``batch_size`` DIDs or ``batch_rows`` rows held in
        memory (a huge repo's spilled rows do not count) are waiting.

        ``publish=False``: stop after the commit (step 3); a single publisher elsewhere
        publishes committed batches (:meth:`publish_committed`). ``metrics``: where each
        batch's write time and records go."""
        self.store = store
        self.sink = sink
        self.job_id = job_id
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.batch_rows = batch_rows
        self.publish = publish
        self.batches = 0
        self.metrics = metrics if metrics is not None else JobMetrics(job_id)
        self._pending: list[_Pending] = []
        self._rows = 0
        self._lock = asyncio.Lock()

    async def recover(self) -> None:
        """After a crash: publish what the store committed, discard what it never did."""
        recovery = await self.store.recover(self.job_id)
        staged = await self.sink.staged_batches()
        for batch_id in sorted(staged):
            if batch_id in recovery.known_batches:
                await self.sink.publish(batch_id)
            else:
                await self.sink.discard(batch_id)
        for batch_id in recovery.committed_unpublished:
            await self.sink.publish(batch_id)  # a no-op when it was published before a crash
            await self.store.mark_published(self.job_id, batch_id)

    async def add(self, result: RepoResult, *, superseded: str | None = None) -> None:
        """Queue one DID's result; writes a batch when it is full (see ``__init__``)."""
        self._pending.append(_Pending(result, superseded))
        if isinstance(result.records, tuple):
            self._rows += len(result.records)
        self.metrics.queue_depth("results", len(self._pending))
        if len(self._pending) >= self.batch_size or self._rows >= self.batch_rows:
            await self.flush()

    async def flush(self) -> None:
        """Write whatever is waiting, as one batch. Raises what the store or sink raise
        (the results stay claimed in the store, so a restart redoes them)."""
        async with self._lock:
            pending, self._pending, self._rows = self._pending, [], 0
            self.metrics.queue_depth("results", 0)
            if pending:
                await finish_before_cancel(self._write(pending))

    async def publish_unbatched(self) -> None:
        """Publish the final states no batch carried (e.g. DIDs that failed to resolve)."""
        rows = [row async for row in self.store.repos(self.job_id, unbatched=True)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            # A re-run may have reopened these DIDs: their old rows must go when these land.
            olds = await self.store.superseded_of(self.job_id, [row.did for row in chunk])
            batch = [_Pending(RepoResult(row), olds.get(row.did)) for row in chunk]
            async with self._lock:
                await finish_before_cancel(self._write(batch))

    async def _write(self, pending: list[_Pending]) -> None:
        """Stage, commit, publish and mark one batch. Callers let it finish before a
        cancellation goes on: stopped between its steps, a batch would stay committed but
        unmarked (published again by the next run's recovery, but not counted now)."""
        started = time.perf_counter()
        batch_id = await self.store.next_batch_id(self.job_id, worker_id=self.worker_id)
        supersedes = {p.result.repo.did: p.superseded for p in pending if p.superseded}
        await self.sink.stage(batch_id, [p.result for p in pending], supersedes)
        try:
            await self.store.commit_batch(self.job_id, batch_id, [p.result.repo for p in pending])
        except BatchRejected:
            await self.sink.discard(batch_id)
            raise
        if self.publish:
            await self.sink.publish(batch_id)
            await self.store.mark_published(self.job_id, batch_id)
        self.batches += 1
        seconds = time.perf_counter() - started
        records: Counter[str] = Counter()
        for p in pending:
            records.update(p.result.repo.records_by_collection)
            p.result.close()  # spilled rows are in the dataset now: their file can go
        self.metrics.batch_written(seconds, records)
        logger.debug(
            "batch.written",
            batch=batch_id,
            repos=len(pending),
            records=records.total(),
            published=self.publish,
            duration=round(seconds, 3),
        )

    async def publish_committed(self) -> int:
        """Publish every committed batch not yet published (the single publisher of a
        distributed job); returns how many."""
        batch_ids = await self.store.unpublished(self.job_id)
        for batch_id in batch_ids:
            await self.sink.publish(batch_id)
            await self.store.mark_published(self.job_id, batch_id)
        return len(batch_ids)

    async def recover_worker(self, worker_id: str) -> None:
        """Take back a dead worker's claims and discard its uncommitted staged batches,
        while other workers go on (their staged batches are left alone)."""
        recovery = await self.store.recover(self.job_id, worker_id=worker_id)
        staged = await self.sink.staged_batches()
        for batch_id in recovery.abandoned:
            if batch_id in staged:
                await self.sink.discard(batch_id)
