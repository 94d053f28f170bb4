"""Crash safety of the batch protocol: a worker process is SIGKILLed at every step of a
batch and at random instants; after each kill a restart's recovery leaves every DID
pending or committed-and-published exactly once, and the finished run's output equals a
clean run's: every DID once, none lost, none twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from bsky_backfill.core.models import DidState
from tests.support import REPO_ROOT
from tests.support.state_worker import STEPS, ToySink, reconcile, records_for
from tests.unit.state.conftest import Backend

JOB = "job-crash"
DIDS = [f"did:plc:{i:024d}" for i in range(300)]


async def start_worker(backend: Backend, sink: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.state_worker",
        "run",
        *backend.child_args(),
        "--job",
        JOB,
        "--sink",
        str(sink),
        "--batch",
        "10",
        *extra,
        cwd=REPO_ROOT,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )


async def check_after_restart(backend: Backend, sink_dir: Path) -> int:
    """Recover as a restarting worker would, then check the invariants; return how many
    DIDs are complete."""
    sink = ToySink(sink_dir)
    async with await backend.open() as store:
        await reconcile(store, JOB, sink)
        counts = await store.counts(JOB)
        assert {s for s, n in counts.items() if n} <= {DidState.PENDING, DidState.COMPLETE}
        stored = {r.did: r async for r in store.repos(JOB)}
        recovery = await store.recover(JOB)
        assert recovery.committed_unpublished == ()
    assert sink.staged() == []
    published = sink.published()
    seen = Counter(did for rows in published.values() for did in rows)
    assert set(seen.values()) <= {1}, "a DID was published twice"
    assert set(seen) == set(stored), "published DIDs differ from complete DIDs"
    for rows in published.values():
        assert all(records == records_for(did) for did, records in rows.items())
    assert set(published) <= recovery.known_batches
    return counts[DidState.COMPLETE]


async def test_sigkill_at_any_point_loses_and_duplicates_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    async with await backend.open() as store:
        await store.create_job(JOB, "crash", "", "h")
        await store.add_dids(JOB, DIDS)
    sink = tmp_path / "sink"

    progress = []
    for step in STEPS:  # every gap of the protocol, at the second batch of a run
        worker = await start_worker(backend, sink, "--kill-at", f"{step}:2")
        assert await worker.wait() == -signal.SIGKILL
        progress.append(await check_after_restart(backend, sink))

    rng = random.Random(20260102)
    for _ in range(4):  # and at instants nobody chose
        # <= 0.15 s / 0.03 s = 5 batches of 10 per run: 4 runs cannot finish the 300
        worker = await start_worker(backend, sink, "--pause", "0.03")
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"ready\n"
        await asyncio.sleep(rng.uniform(0.0, 0.15))
        worker.send_signal(signal.SIGKILL)
        assert await worker.wait() == -signal.SIGKILL
        progress.append(await check_after_restart(backend, sink))
    assert progress == sorted(progress)
    assert progress[-1] < len(DIDS)

    worker = await start_worker(backend, sink)
    assert await worker.wait() == 0
    assert await check_after_restart(backend, sink) == len(DIDS)
    published = ToySink(sink).published()
    assert sorted(did for rows in published.values() for did in rows) == DIDS
