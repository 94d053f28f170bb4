"""Runs a distributed job from one place (``run --distributed``, or the server): plans it
through a task, sends shard tasks to the workers, publishes what they commit, and
finishes the dataset.

The coordinator holds the job's lease (one coordinator per job) and is the one publisher.
The loop, every second: publish committed batches; when no shard task is outstanding,
take back the claims of workers whose lease is gone (they died and their task is not
coming back; a live run keeps its lease, so its work is never taken from it), then send
shards for every host with due pending DIDs. Done when every DID is final. A killed
worker's task comes back by itself (``acks_late``) and its redelivered run takes back
what the dead one held. Cancelling (the flag in Redis) reaches every worker within a
second; the coordinator waits for the shard tasks to return, then marks the job
cancelled, resumable by running it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog
from celery import Celery
from celery.result import AsyncResult

from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import (
    JobOutcome,
    finish_job,
    job_metrics,
    job_runner,
    mark_stopped,
    observed,
    open_checked_sink,
    open_job,
)
from bsky_backfill.core.manager import JobRunner, Progress
from bsky_backfill.core.models import DidState
from bsky_backfill.distributed.control import CancelFlags, Lease
from bsky_backfill.distributed.shards import cut_shards
from bsky_backfill.distributed.steps import open_shared_store
from bsky_backfill.distributed.tasks import PLAN_TASK, SHARD_TASK
from bsky_backfill.errors import CoordinatorBusy, JobCancelled, WorkerTaskFailed
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.sinks import AsyncSink
from bsky_backfill.state.model import JobState
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["run_distributed"]

logger = structlog.get_logger(__name__)

_TICK: Final = 1.0
_MAX_FAILED_ROUNDS: Final = 3
_NO_WORKER_SECONDS: Final = 120.0


@dataclass
class _Job:
    """What the loop works with: the job, its Celery app, store, publisher and flags."""

    config: BackfillConfig
    text: str
    app: Celery
    base_dir: Path
    store: SqlJobStore
    runner: JobRunner
    flags: CancelFlags
    on_progress: Callable[[Progress], None] | None
    outstanding: list[AsyncResult] = field(default_factory=list)
    failed_rounds: int = 0

    @property
    def job_id(self) -> str:
        return self.config.name

    def send(self, task: str, *args: Any) -> AsyncResult:
        """Blocking (the broker): call it in a thread."""
        return self.app.send_task(task, args=[self.text, str(self.base_dir), *args])


async def run_distributed(
    config: BackfillConfig,
    config_text: str,
    app: Celery,
    *,
    base_dir: Path,
    on_progress: Callable[[Progress], None] | None = None,
    metrics: JobMetrics | None = None,
) -> JobOutcome:
    """Run (or resume, or refresh) the job on the workers consuming ``app``'s queue;
    returns when its dataset is complete. Raises ``JobCancelled`` when its flag is raised
    (or this call is cancelled, which raises the flag), ``CoordinatorBusy`` when another
    coordinator runs the job, ``WorkerTaskFailed`` when the workers' tasks fail or no
    worker takes them, and what the store, sink or preflight raise. ``metrics``: the
    job's DIDs by state and state (the workers count their own requests)."""
    metrics = metrics if metrics is not None else job_metrics(config)
    work = _coordinate(config, config_text, app, base_dir, on_progress, metrics)
    return await observed(config, metrics, work)


async def _coordinate(
    config: BackfillConfig,
    config_text: str,
    app: Celery,
    base_dir: Path,
    on_progress: Callable[[Progress], None] | None,
    metrics: JobMetrics,
) -> JobOutcome:
    spec = config.distributed
    sink = AsyncSink(await open_checked_sink(config))
    started = datetime.now(UTC)
    async with (
        open_shared_store(config) as store,
        CancelFlags.open(spec.redis_url, spec.key_prefix) as flags,
    ):
        lease = Lease(flags, f"coordinator:{config.name}")
        if not await lease.acquire():
            raise CoordinatorBusy(
                f"job {config.name} is being run by another coordinator (run --distributed "
                "or a server) now; wait for it, or cancel it with bsky-backfill cancel"
            )
        async with lease.kept():
            job = await open_job(store, config, config_text)
            refresh = job.state is JobState.COMPLETED  # a re-run: fetch only what changed
            await flags.clear(config.name)
            await store.set_job_state(config.name, JobState.RUNNING)
            async with job_runner(
                config, store, sink, worker_id="coordinator", metrics=metrics
            ) as runner:
                work = _Job(config, config_text, app, base_dir, store, runner, flags, on_progress)
                await _run(work, refresh)
            return await finish_job(config, store, sink, started, runner)


async def _run(job: _Job, refresh: bool) -> None:
    """Plan, drive, publish the final states no batch carried; the job's state on the way
    out when it does not complete."""
    try:
        await job.runner.publish_committed()  # what a previous run committed
        await _plan(job, refresh)
        await _drive(job)
        await job.runner.publish_unbatched()
    except asyncio.CancelledError:
        await job.flags.cancel(job.job_id)
        await mark_stopped(job.store, job.job_id, JobState.CANCELLED, "cancelled")
        raise
    except JobCancelled:
        await mark_stopped(job.store, job.job_id, JobState.CANCELLED, "cancelled")
        raise
    except BaseException as exc:
        await mark_stopped(job.store, job.job_id, JobState.FAILED, exc)
        raise


async def _plan(job: _Job, refresh: bool) -> None:
    """The plan task, to its end: raises ``WorkerTaskFailed`` if it fails or no worker
    takes it."""
    result = await asyncio.to_thread(job.send, PLAN_TASK, refresh)
    logger.info("plan.sent", task=result.id, refresh=refresh)
    queued = time.monotonic()
    while True:
        state = await asyncio.to_thread(lambda: result.state)
        if state == "SUCCESS":
            logger.info("plan.done", task=result.id, duration=round(time.monotonic() - queued, 3))
            return
        if state == "FAILURE":
            error = await asyncio.to_thread(lambda: result.result)
            raise WorkerTaskFailed(f"planning the job failed on a worker: {_described(error)}")
        if state == "PENDING" and time.monotonic() - queued > _NO_WORKER_SECONDS:
            queue = job.app.conf.task_default_queue
            raise WorkerTaskFailed(
                f"no worker took the job's first task from queue {queue!r} in "
                f"{_NO_WORKER_SECONDS:.0f} s: start workers on the same broker and queue "
                f"(bsky-backfill worker --queue {queue} --broker URL)"
            )
        await asyncio.sleep(0.2)


async def _drive(job: _Job) -> None:
    """The loop of the module docstring, until every DID is final."""
    seconds = _shard_seconds(job.app)
    progress = Progress()
    while True:
        await job.runner.publish_committed()
        counts = await job.runner.report_counts()
        _report(progress, counts, job.on_progress)
        if await job.flags.is_cancelled(job.job_id):
            await _wait_all(job.outstanding)
            await job.runner.publish_committed()
            raise JobCancelled(f"job {job.job_id} was cancelled; run it again to resume")
        await _collect(job)
        if not job.outstanding:
            if counts[DidState.IN_PROGRESS] and await _take_back_dead(job):
                continue
            if not counts[DidState.PENDING] and not counts[DidState.IN_PROGRESS]:
                # Batches committed after this round's publish made these counts final.
                await job.runner.publish_committed()
                return
            await _send_shards(job, seconds)
        await asyncio.sleep(_TICK)


async def _send_shards(job: _Job, seconds: float) -> None:
    """Shards for the hosts with due pending DIDs; the plan again if some DIDs have no
    host yet (a plan cut short); nothing while the rest only wait for their retry time."""
    pending = await job.store.pending_hosts(job.job_id)
    if not pending and await job.store.unresolved(job.job_id, limit=1):
        job.outstanding = [await asyncio.to_thread(job.send, PLAN_TASK, False)]
        logger.info("plan.sent_again", task=job.outstanding[0].id, reason="DIDs without a host")
        return
    shards = cut_shards(pending, job.config.distributed.shard_size)
    job.outstanding = [
        await asyncio.to_thread(job.send, SHARD_TASK, shard, seconds) for shard in shards
    ]
    if shards:
        logger.info("shards.sent", shards=len(shards), hosts=len(pending))


async def _take_back_dead(job: _Job) -> bool:
    """Take back the claims (and uncommitted staged batches) of every claim holder whose
    lease is gone; True if there were any."""
    taken = False
    for holder in await job.store.holders(job.job_id):
        if not await Lease(job.flags, holder).held_elsewhere():
            await job.runner.recover_worker(holder)
            logger.info("claims.taken_back", holder=holder, reason="its lease is gone")
            taken = True
    return taken


@dataclass(frozen=True, slots=True)
class _Finished:
    """Of the outstanding tasks: those still running, and the errors of failed ones."""

    running: list[AsyncResult]
    finished: int
    errors: list[str]


def _sort(results: list[AsyncResult]) -> _Finished:
    """Blocking (the result backend): call it in a thread."""
    running = [result for result in results if not result.ready()]
    done = [result for result in results if result not in running]
    errors = [_described(result.result) for result in done if result.failed()]
    return _Finished(running, len(done), errors)


async def _collect(job: _Job) -> None:
    """Drop finished tasks; raise ``WorkerTaskFailed`` when every task of a round failed,
    round after round."""
    found = await asyncio.to_thread(_sort, job.outstanding)
    job.outstanding = found.running
    if not found.finished:
        return
    for error in found.errors:
        logger.warning("shard.failed", error=error)
    if found.errors and len(found.errors) == found.finished and not found.running:
        job.failed_rounds += 1
        if job.failed_rounds >= _MAX_FAILED_ROUNDS:
            raise WorkerTaskFailed(
                f"every shard task failed, {job.failed_rounds} rounds in a row; "
                f"last error: {found.errors[-1]}"
            )
    elif len(found.errors) < found.finished:
        job.failed_rounds = 0


def _described(error: object) -> str:
    """An exception a task raised, as one line."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def _shard_seconds(app: Celery) -> float:
    """A shard task's time budget: a third of the visibility timeout, so that a task is
    not handed out again while it runs (its in-flight work finishes after the budget)."""
    transport = app.conf.broker_transport_options or {}
    return float(transport.get("visibility_timeout", 3600)) / 3


def _report(
    progress: Progress,
    counts: dict[DidState, int],
    on_progress: Callable[[Progress], None] | None,
) -> None:
    progress.total = sum(counts.values())
    progress.done = progress.total - counts[DidState.PENDING] - counts[DidState.IN_PROGRESS]
    if on_progress is not None:
        on_progress(progress)


async def _wait_all(results: list[AsyncResult]) -> None:
    """Until every task has ended (they stop within a second of a cancel), or a minute."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            while (await asyncio.to_thread(_sort, results)).running:  # noqa: ASYNC110 - polls
                await asyncio.sleep(0.2)
