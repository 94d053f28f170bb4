"""A batch is written whole: cancelling its writer at any await of the write (the job's
end stops the periodic flusher that way) still leaves it published, marked and counted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsky_backfill.core.batches import BatchWriter
from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.observability.metrics import JobMetrics, exposition
from bsky_backfill.sinks import AsyncSink, ParquetSink
from bsky_backfill.state import SqlJobStore
from tests.support.metrics import parse

NOW = datetime(2025, 1, 2, tzinfo=UTC)
DIDS = [f"did:plc:{n:024d}" for n in range(4)]


def result(did: str) -> RepoResult:
    record = RecordRow(
        did=did,
        collection="app.bsky.feed.post",
        rkey="3laaaaaaaaa22",
        uri=f"at://{did}/app.bsky.feed.post/3laaaaaaaaa22",
        cid="bafyreiaaaa",
        created_at=NOW,
        record="{}",
        rev="3laaaaaaaaa22",
        commit_cid="bafyreibbbb",
        pds="https://pds.example",
        job_id="j",
        fetched_at=NOW,
    )
    row = RepoRow(
        did=did,
        status=DidState.COMPLETE,
        records=1,
        records_by_collection={"app.bsky.feed.post": 1},
        fetched_at=NOW,
    )
    return RepoResult(row, (record,))


@pytest.mark.parametrize("delay_ms", range(0, 60, 3))
async def test_a_flush_cancelled_at_any_point_still_writes_its_batch_whole(
    tmp_path: Path, delay_ms: int
) -> None:
    store = await SqlJobStore.open(tmp_path / "state.db")
    try:
        await store.create_job("j", "j", "", "h")
        await store.add_dids("j", DIDS)
        await store.claim("j", len(DIDS), worker_id="w")
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
    finally:
        await store.aclose()
