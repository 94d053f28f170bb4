"""100k DIDs through add, claim and commit: correctness at size, and the figures printed
(never asserted: timing belongs to benchmarks/bench_state.py, not to a pass/fail)."""

from __future__ import annotations

import time

import pytest

from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.state import SqlJobStore
from tests.unit.state.conftest import Backend

N = 100_000
COMMITTED = 10_000
JOB = "job-big"


async def test_100k_dids_add_claim_commit(
    store: SqlJobStore, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.create_job(JOB, "big", "", "h")
    dids = [f"did:plc:{i:024d}" for i in range(N)]

    start = time.perf_counter()
    assert await store.add_dids(JOB, dids) == N
    added = time.perf_counter()
    assert await store.add_dids(JOB, dids[: N // 2]) == 0
    again = time.perf_counter()

    claimed: list[str] = []
    while claims := await store.claim(JOB, 100, worker_id="w"):
        claimed += [c.did for c in claims]
    done = time.perf_counter()
    assert len(claimed) == len(set(claimed)) == N

    for i in range(0, COMMITTED, 100):
        batch = await store.next_batch_id(JOB, worker_id="w")
        rows = [RepoRow(d, DidState.COMPLETE, rev="3l", records=3) for d in claimed[i : i + 100]]
        await store.commit_batch(JOB, batch, rows)
        await store.mark_published(JOB, batch)
    committed = time.perf_counter()
    counts = await store.counts(JOB)
    assert (counts[DidState.COMPLETE], counts[DidState.IN_PROGRESS]) == (COMMITTED, N - COMMITTED)
    assert await store.records_total(JOB) == 3 * COMMITTED

    with capsys.disabled():
        print(
            f"\n[state {backend.name}] add {N / (added - start):,.0f} DIDs/s, "
            f"re-add (all duplicates) {N / 2 / (again - added):,.0f}/s, "
            f"claim x100 {N / (done - again):,.0f} DIDs/s, "
            f"next_batch_id+commit+mark x100 {COMMITTED / (committed - done):,.0f} DIDs/s"
        )
