"""The engine's pieces for many workers, in one process over one store and one sink:
runners that only stage and commit (shards with budgets and time limits), one publisher,
and taking back a dead worker's claims and staged batches while the others go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bsky_backfill.config import load_config
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import job_runner, open_checked_sink, open_job, run_job, state_path
from bsky_backfill.core.manager import JobRunner
from bsky_backfill.core.models import DidState
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import NetworkSpec
from bsky_backfill.sinks import AsyncSink
from bsky_backfill.state.sql.store import SqlJobStore
from tests.support.jobs import job_yaml
from tests.support.sinks import visible

SPEC = NetworkSpec(PopulationSpec(seed=4, accounts=60, hosts=3, max_records=40))


def write_config(folder: Path, dids: list[str], plc: str) -> BackfillConfig:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dids.txt").write_text("\n".join(dids) + "\n")
    (folder / "job.yaml").write_text(job_yaml(plc, batch=4))
    return load_config(folder / "job.yaml")


@dataclass
class Cluster:
    """Runners sharing one store and sink: the publisher, and two that only commit."""

    sink: AsyncSink
    publisher: JobRunner
    first: JobRunner
    last: JobRunner


@asynccontextmanager
async def opened_job(config: BackfillConfig) -> AsyncIterator[tuple[AsyncSink, SqlJobStore]]:
    """The job's sink and its store, with the job opened in it."""
    sink = AsyncSink(await open_checked_sink(config))
    async with await SqlJobStore.open(state_path(config)) as store:
        await open_job(store, config, "")
        yield sink, store


@asynccontextmanager
async def cluster(config: BackfillConfig, dids: list[str], *workers: str) -> AsyncIterator[Cluster]:
    """The job planned, and runners over its store and sink; see :class:`Cluster`."""
    async with (
        opened_job(config) as (sink, store),
        job_runner(config, store, sink, worker_id="publisher") as publisher,
        job_runner(config, store, sink, worker_id=workers[0], publish=False) as first,
        job_runner(config, store, sink, worker_id=workers[-1], publish=False) as last,
    ):
        await publisher.plan(dids)
        yield Cluster(sink, publisher, first, last)


def without_fetched_at(path: Path) -> tuple[set[tuple], set[tuple]]:
    records, repos = visible("parquet", path)
    return ({r[:11] + r[12:] for r in records}, {r[:11] + r[12:] for r in repos})


async def test_shards_with_budgets_and_one_publisher_write_the_single_runs_dataset(
    tmp_path: Path,
) -> None:
    async with FakeNetwork(SPEC) as net:
        dids = [account.did for account in net.world]
        config = write_config(tmp_path / "shards", dids, net.plc_url)
        async with cluster(config, dids, "w1", "w2") as workers:
            publisher, one, two = workers.publisher, workers.first, workers.last
            pending = await publisher.store.pending_hosts(config.name)
            half = {host: (n + 1) // 2 for host, n in pending.items()}
            await one.run_shard(half, seconds=60)
            assert one.progress.done == sum(half.values())
            assert await publisher.store.unpublished(config.name), "committed, not published"
            assert not (tmp_path / "shards" / "out" / "records").exists()
            await two.run_shard(pending, seconds=60)
            await publisher.publish_committed()
            await publisher.publish_unbatched()
            assert await publisher.store.unpublished(config.name) == []
            counts = await publisher.store.counts(config.name)
        reference = write_config(tmp_path / "single", dids, net.plc_url)
        await run_job(reference, "")
    assert counts[DidState.PENDING] == counts[DidState.IN_PROGRESS] == 0
    shards = without_fetched_at(tmp_path / "shards" / "out")
    assert shards == without_fetched_at(tmp_path / "single" / "out")


async def test_a_shard_out_of_time_claims_nothing(tmp_path: Path) -> None:
    async with FakeNetwork(SPEC) as net:
        dids = [a.did for a in net.world]
        config = write_config(tmp_path, dids, net.plc_url)
        async with cluster(config, dids, "w1") as workers:
            publisher, late = workers.publisher, workers.first
            pending = await publisher.store.pending_hosts(config.name)
            await late.run_shard(pending, seconds=0)
            assert late.progress.done == 0
            assert await publisher.store.pending_hosts(config.name) == pending


async def test_a_dead_workers_claims_and_staged_batch_are_taken_back_the_others_kept(
    tmp_path: Path,
) -> None:
    async with FakeNetwork(SPEC) as net:
        dids = [a.did for a in net.world]
        config = write_config(tmp_path, dids, net.plc_url)
        async with cluster(config, dids, "dead", "live") as workers:
            store, sink, live = workers.publisher.store, workers.sink, workers.last
            held = await store.claim(config.name, 3, worker_id="dead")
            dead_batch = await store.next_batch_id(config.name, worker_id="dead")
            live_batch = await store.next_batch_id(config.name, worker_id="live")
            for batch in (dead_batch, live_batch):
                await sink.stage(batch, [])
            await live.recover_worker("dead")
            assert await sink.staged_batches() == {live_batch}
            counts = await store.counts(config.name)
            assert counts[DidState.IN_PROGRESS] == 0
            assert len(held) == 3


async def test_a_run_ends_with_its_last_repo_not_at_the_next_periodic_flush(
    tmp_path: Path,
) -> None:
    # Results waiting for a batch keep their DIDs in progress: a run used to start host
    # workers with nothing to claim, again and again, until the periodic flush.
    async with FakeNetwork(SPEC) as net:
        dids = [account.did for account in net.world]
        config = write_config(tmp_path / "one", dids, net.plc_url)
        async with opened_job(config) as (sink, store), job_runner(config, store, sink) as runner:
            runner.options = replace(runner.options, batch_size=10_000, flush_seconds=90)
            host_counts = store.host_counts
            calls = 0

            async def counted(job_id: str) -> dict[str | None, dict[DidState, int]]:
                nonlocal calls
                calls += 1
                return await host_counts(job_id)

            store.host_counts = counted  # type: ignore[method-assign]
            await asyncio.wait_for(runner.run(dids), timeout=60)
        assert runner.progress.done == len(dids)
        assert calls < 20, f"{calls} host counts: host workers spun while results waited"
