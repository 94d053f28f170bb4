"""What the tasks do, as coroutines: plan a job, process one shard.

Both open the job's shared state (PostgreSQL, ``distributed.state_url``) and sink from
the config the task carries. A shard task's worker id is its Celery task id, the same
on a redelivery: the redelivered run first takes back what its killed predecessor held
(claims, uncommitted staged batches) and then does its budget of work. A task claims
nothing after its time budget (a third of the visibility timeout), so a slow host never
makes a task outlive the timeout; its lease (``control.Lease``) covers the rest.
Workers stage and commit; only the coordinator publishes, so many workers never rewrite
one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import (
    job_runner,
    limiter_options,
    open_job,
    source_dids,
    store_location,
)
from bsky_backfill.core.outputs import open_sink
from bsky_backfill.distributed.control import CancelFlags, Lease
from bsky_backfill.distributed.limiter import SharedLimiters
from bsky_backfill.errors import ConfigError
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.sinks import AsyncSink
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["ShardReport", "open_shared_store", "plan_job", "process_shard", "shard_worker_id"]

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ShardReport:
    """What one shard task did."""

    worker_id: str
    done: int
    records: int
    cancelled: bool
    duplicate: bool = False
    """Another live run of the same task held the lease: this one did nothing."""

    def as_dict(self) -> dict[str, object]:
        """The task's result, as JSON."""
        return asdict(self)


def shard_worker_id(task_id: str) -> str:
    """A shard run's worker id (claims, batches and lease): the same for every delivery."""
    return f"shard-{task_id}"


@contextlib.asynccontextmanager
async def open_shared_store(config: BackfillConfig) -> AsyncIterator[SqlJobStore]:
    """The job store every worker of the job shares. Raises ``ConfigError`` without
    ``distributed.state_url``."""
    if config.distributed.state_url is None:
        raise ConfigError(
            "a distributed job needs a shared PostgreSQL job store: set "
            "distributed.state_url (postgresql://user@host/db, credentials in ${ENV})",
            key="backfill.distributed.state_url",
        )
    store = await SqlJobStore.open(*store_location(config))
    try:
        yield store
    finally:
        await store.aclose()


async def plan_job(config: BackfillConfig, config_text: str, *, refresh: bool) -> None:
    """Read the source, add its DIDs and resolve each one's host; or, with ``refresh`` (a
    job that had finished), reopen the DIDs whose repo changed."""
    async with open_shared_store(config) as store:
        await open_job(store, config, config_text)
        sink = AsyncSink(open_sink(config))
        async with job_runner(config, store, sink, worker_id="planner") as runner:
            if refresh:
                await runner.refresh()
                await runner.plan([])  # reopened DIDs that never resolved: resolve them now
            else:
                await runner.plan(await source_dids(config, runner.client))


async def process_shard(
    config: BackfillConfig,
    task_id: str,
    budgets: Mapping[str, int],
    *,
    seconds: float,
    egress_id: str,
    metrics: JobMetrics | None = None,
) -> ShardReport:
    """Fetch up to ``budgets[host]`` DIDs of each host, claiming none after ``seconds``,
    stopping early (claims given back) when the job's cancel flag is raised. Returns at
    once when another live run of the same task holds its lease. ``metrics``: the job's
    figures in this worker process (None: the run's own)."""
    worker_id = shard_worker_id(task_id)
    spec = config.distributed
    scope = "cluster" if spec.rate_limit_scope == "cluster" else egress_id
    async with (
        open_shared_store(config) as store,
        CancelFlags.open(spec.redis_url, spec.key_prefix) as flags,
        SharedLimiters.open(
            spec.redis_url, spec.key_prefix, scope, limiter_options(config)
        ) as limiters,
    ):
        lease = Lease(flags, worker_id)  # the coordinator asks it by claim holder
        if not await lease.acquire():
            logger.info("shard.duplicate", worker_id=worker_id)
            return ShardReport(worker_id, 0, 0, cancelled=False, duplicate=True)
        started = time.monotonic()
        logger.info("shard.started", worker_id=worker_id, budgets=dict(budgets))
        sink = AsyncSink(open_sink(config))
        async with (
            lease.kept(),
            job_runner(
                config,
                store,
                sink,
                worker_id=worker_id,
                limiter_for=limiters.get,
                publish=False,
                metrics=metrics,
            ) as runner,
        ):
            await runner.recover_worker(worker_id)  # what a killed run of this task held
            if await flags.is_cancelled(config.name):
                return ShardReport(worker_id, 0, 0, cancelled=True)
            work = runner.run_shard(budgets, seconds=seconds)
            # A shard that overruns twice its budget (plus a slow repo's minute) is stuck:
            # end it with an error, so its claims are taken back and done again.
            async with asyncio.timeout(2 * seconds + 60):
                cancelled = await _until_stopped(work, flags.wait(config.name), lease.lost.wait())
            if cancelled:
                await runner.recover_worker(worker_id)
            report = ShardReport(
                worker_id, runner.progress.done, runner.progress.records, cancelled
            )
            duration = round(time.monotonic() - started, 3)
            logger.info("shard.done", **report.as_dict(), duration=duration)
            return report


async def _until_stopped(work: Coroutine[Any, Any, None], *stops: Coroutine[Any, Any, Any]) -> bool:
    """Run ``work`` until it ends (False) or one of ``stops`` ends first (True: the work
    was stopped; its claims are still held)."""
    working = asyncio.create_task(work)
    watching = [asyncio.create_task(stop) for stop in stops]
    try:
        done, _ = await asyncio.wait({working, *watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (working, *watching):
            task.cancel()
        await asyncio.gather(working, *watching, return_exceptions=True)
    if working in done:
        working.result()  # the work's own error, if it failed
        return False
    for task in watching:
        if task in done:
            task.result()  # Redis unreachable, if that is why a watch ended
    return True
