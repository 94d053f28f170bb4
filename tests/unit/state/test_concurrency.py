"""Concurrent claimers never get the same DID: tasks on one store, several stores (as
several machines would have), and separate processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from bsky_backfill.core.models import DidState
from bsky_backfill.errors import StoreUnavailable
from bsky_backfill.state import SqlJobStore, StoreOptions
from tests.support import REPO_ROOT, require
from tests.support.postgres import fresh_schema, postgres_problem, postgres_url
from tests.unit.state.conftest import Backend

JOB = "job-c"


def dids(n: int) -> list[str]:
    return [f"did:plc:{i:024d}" for i in range(n)]


async def claim_all(store: SqlJobStore, worker: str, limit: int) -> list[str]:
    got: list[str] = []
    while claims := await store.claim(JOB, limit, worker_id=worker):
        got += [c.did for c in claims]
        await asyncio.sleep(0)  # let the other claimers interleave
    return got


async def test_parallel_tasks_never_share_a_did(store: SqlJobStore) -> None:
    await store.create_job(JOB, "c", "", "h")
    await store.add_dids(JOB, dids(2_000))
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(claim_all(store, f"w{i}", 7)) for i in range(8)]
    claimed = Counter(d for task in tasks for d in task.result())
    assert set(claimed) == set(dids(2_000))
    assert set(claimed.values()) == {1}
    assert sum(1 for task in tasks if task.result()) > 1
    assert (await store.counts(JOB))[DidState.IN_PROGRESS] == 2_000


async def test_separate_stores_never_share_a_did(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    try:
        await stores[0].create_job(JOB, "c", "", "h")
        await stores[0].add_dids(JOB, dids(1_500))
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(claim_all(store, f"s{i}t{t}", 5))
                for i, store in enumerate(stores)
                for t in range(2)
            ]
        claimed = Counter(d for task in tasks for d in task.result())
        assert set(claimed) == set(dids(1_500))
        assert set(claimed.values()) == {1}
    finally:
        for store in stores:
            await store.aclose()


async def test_two_processes_never_share_a_did(backend: Backend, tmp_path: Path) -> None:
    async with await backend.open() as store:
        await store.create_job(JOB, "c", "", "h")
        await store.add_dids(JOB, dids(3_000))
    outs = [tmp_path / f"claimed-{i}.txt" for i in range(2)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.state_worker",
            "claim",
            *backend.child_args(),
            "--job",
            JOB,
            "--worker",
            f"p{i}",
            "--batch",
            "5",
            "--pause",
            "0.002",
            "--out",
            str(out),
            cwd=REPO_ROOT,
            env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        )
        for i, out in enumerate(outs)
    ]
    assert [await child.wait() for child in children] == [0, 0]
    per_process = [out.read_text().split() for out in outs]
    claimed = Counter(d for got in per_process for d in got)
    assert set(claimed) == set(dids(3_000))
    assert set(claimed.values()) == {1}
    assert all(per_process), "both processes should have claimed some DIDs"


async def test_a_wait_behind_a_stalled_session_ends_in_a_retryable_error() -> None:
    # PostgreSQL's lock_timeout; SQLite waits by its busy_timeout (tested with the store).
    problem = postgres_problem()
    require(problem is None, problem or "")
    async with fresh_schema() as schema:
        options = StoreOptions(schema=schema, lock_timeout=0.5)
        async with await SqlJobStore.open(postgres_url(), options) as store:
            await store.create_job("j", "j", "", "h")
            await store.add_dids("j", ["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"])
            await store.claim("j", 1, worker_id="w")
            stalled = await asyncpg.connect(postgres_url())
            try:
                transaction = stalled.transaction()
                await transaction.start()  # holds the row, then sits idle: a stalled worker
                await stalled.execute(f'SELECT * FROM "{schema}".dids FOR UPDATE')
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="lock"):
                    await store.recover("j", worker_id="w")
                assert time.monotonic() - started < 10
                await transaction.rollback()
            finally:
                await stalled.close()
            assert (await store.recover("j", worker_id="w")).released == 1
