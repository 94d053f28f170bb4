"""The server's job runner on the simulated network: a job cancelled at random instants is
marked cancelled, leaves its store free for writers at once, and resumes to the exact
dataset a run never cancelled writes."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from bsky_backfill.api.jobs import JobManager
from bsky_backfill.api.registry import Registry
from bsky_backfill.config.loader import load_config_text
from bsky_backfill.core.job import state_path
from bsky_backfill.state.model import JobState
from tests.support.jobs import dids_of, job_yaml
from tests.support.sinks import visible

CANCELS = 12


def assert_not_write_locked(path: Path) -> None:
    """A writer gets the store's lock within a second: nothing the cancelled run left holds it."""
    connection = sqlite3.connect(path, timeout=1.0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@pytest.mark.timeout(300)
async def test_cancelling_at_random_instants_leaves_the_store_free_and_the_resume_exact(
    tmp_path: Path, fakenet_process: dict[str, object]
) -> None:
    dids = dids_of(fakenet_process)
    (tmp_path / "dids.txt").write_text("\n".join(dids) + "\n")
    plc = fakenet_process["plc"]
    slow = job_yaml(plc, name="c", rate=8, batch=5, out=str(tmp_path / "out"), max_hosts=1)
    whole = job_yaml(plc, name="c", rate=50, batch=5, out=str(tmp_path / "whole"))
    registry = await Registry.open(tmp_path / "server.sqlite")
    manager = JobManager(registry)
    chance = random.Random(7)
    try:
        config = load_config_text(slow, base_dir=tmp_path, environ={})
        for _ in range(CANCELS):
            await manager.start(config, slow)
            await asyncio.sleep(chance.uniform(0.05, 2.5))
            status = await manager.cancel("c")
            assert status.state in (JobState.CANCELLED, JobState.COMPLETED), status
            assert_not_write_locked(state_path(config))
        await manager.start(config, slow)
        await manager.wait("c")
        finished = await manager.status("c")
        assert finished.state is JobState.COMPLETED, finished
        assert sum(finished.counts.values()) == len(dids)

        reference = load_config_text(whole, base_dir=tmp_path, environ={})
        await manager.start(reference, whole)  # the same job id, another dataset
        await manager.wait("c")
        assert (await manager.status("c")).state is JobState.COMPLETED
    finally:
        await manager.aclose()
        await registry.aclose()
    fetched = 11  # fetched_at differs between runs, in records and repos alike

    def rows(path: Path) -> tuple[set[tuple], set[tuple]]:
        records, repos = visible("parquet", path)
        return (
            {r[:fetched] + r[fetched + 1 :] for r in records},
            {r[:fetched] + r[fetched + 1 :] for r in repos},
        )

    assert rows(tmp_path / "out") == rows(tmp_path / "whole")
