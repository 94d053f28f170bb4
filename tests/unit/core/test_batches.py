"""A batch is written whole: cancelling its writer at any await of the write (the job's
end stops the periodic flusher that way) still leaves it published, marked and counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsky_backfill.core.batches import BatchWriter
from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.core.spill import SpilledRows
from bsky_backfill.observability.metrics import JobMetrics, exposition
from bsky_backfill.sinks import AsyncSink, ParquetSink
from bsky_backfill.state import SqlJobStore
from tests.support.metrics import parse

NOW = datetime(2025, 1, 2, tzinfo=UTC)
DIDS = [f"did:plc:{n:024d}" for n in range(4)]


def record(did: str, n: int = 0) -> RecordRow:
    rkey = f"3laaaaaaaaa{n:02d}"
    return RecordRow(
        did=did,
        collection="app.bsky.feed.post",
        rkey=rkey,
        uri=f"at://{did}/app.bsky.feed.post/{rkey}",
        cid="bafyreiaaaa",
        created_at=NOW,
        record="{}",
        rev="3laaaaaaaaa22",
        commit_cid="bafyreibbbb",
        pds="https://pds.example",
        job_id="j",
        fetched_at=NOW,
    )


def result(did: str, rows: int = 1, *, spilled: bool = False) -> RepoResult:
    records = tuple(record(did, n) for n in range(rows))
    row = RepoRow(
        did=did,
        status=DidState.COMPLETE,
        records=rows,
        records_by_collection={"app.bsky.feed.post": rows},
        fetched_at=NOW,
    )
    if not spilled:
        return RepoResult(row, records)
    on_disk = SpilledRows()
    on_disk.append(records)
    return RepoResult(row, on_disk)


@asynccontextmanager
async def claimed(tmp_path: Path) -> AsyncIterator[SqlJobStore]:
    """A job store with ``DIDS`` claimed by worker ``w`` of job ``j``."""
    store = await SqlJobStore.open(tmp_path / "state.db")
    try:
        await store.create_job("j", "j", "", "h")
        await store.add_dids("j", DIDS)
        await store.claim("j", len(DIDS), worker_id="w")
        yield store
    finally:
        await store.aclose()


async def test_a_batch_is_written_once_its_rows_in_memory_reach_batch_rows(
    tmp_path: Path,
) -> None:
    async with claimed(tmp_path) as store:
        sink = AsyncSink(ParquetSink(tmp_path / "out"))
        writer = BatchWriter(store, sink, job_id="j", worker_id="w", batch_size=100, batch_rows=5)
        await writer.add(result(DIDS[0], 3))
        await writer.add(result(DIDS[1], 50, spilled=True))  # on disk: not counted
        assert writer.batches == 0
        await writer.add(result(DIDS[2], 2))  # 3 + 2 rows in memory: full
        assert writer.batches == 1
        assert (await store.counts("j"))[DidState.COMPLETE] == 3
        await writer.add(result(DIDS[3], 4))  # counting starts again with the next batch
        assert writer.batches == 1


@pytest.mark.parametrize("delay_ms", range(0, 60, 3))
async def test_a_flush_cancelled_at_any_point_still_writes_its_batch_whole(
    tmp_path: Path, delay_ms: int
) -> None:
    async with claimed(tmp_path) as store:
        metrics = JobMetrics("j")
        sink = AsyncSink(ParquetSink(tmp_path / "out"))
        writer = BatchWriter(
            store, sink, job_id="j", worker_id="w", batch_size=100, metrics=metrics
        )
        for did in DIDS:
            await writer.add(result(did))
        flushing = asyncio.create_task(writer.flush())
        await asyncio.sleep(delay_ms / 1000)  # stage, commit, publish, mark: each takes ms
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        if (await store.counts("j"))[DidState.COMPLETE]:  # the write had begun: it finished
            assert await store.unpublished("j") == []
            scrape = parse(exposition([metrics.registry]).decode())
            assert scrape.total("bsky_backfill_records_written_total") == len(DIDS)
