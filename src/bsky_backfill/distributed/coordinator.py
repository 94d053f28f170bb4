"""Runs a distributed job from one place (``run --distributed``, or the server): plans it
through a task, sends shard tasks to the workers, publishes what they commit, and
finishes the dataset.

The loop, every second: publish committed batches (the coordinator is the one
publisher); when no shard task is outstanding, send shards for every host with pending
DIDs — or, if DIDs are still claimed with nobody working, take them back first (their
worker died and its task is not coming back). Done when every DID is final. A killed
worker's task comes back by itself (``acks_late``) and its redelivered run takes back
what the dead one held. Cancelling (the flag in Redis) reaches every worker within a
second; the coordinator waits for the shard tasks to return, then marks the job
cancelled, resumable by running it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from celery import Celery
from celery.result import AsyncResult

from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import (
    JobOutcome,
    finish_job,
    job_runner,
    open_checked_sink,
    open_job,
)
from bsky_backfill.core.manager import JobRunner, Progress
from bsky_backfill.core.models import DidState
from bsky_backfill.distributed.control import CancelFlags
from bsky_backfill.distributed.shards import cut_shards
from bsky_backfill.distributed.steps import open_shared_store
from bsky_backfill.distributed.tasks import PLAN_TASK, SHARD_TASK
from bsky_backfill.errors import BackfillError
from bsky_backfill.sinks import AsyncSink
from bsky_backfill.state.model import JobState
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["JobCancelled", "ShardTaskFailed", "run_distributed"]

_TICK: Final = 1.0
_MAX_FAILED_ROUNDS: Final = 3


class JobCancelled(BackfillError):
    """The job was cancelled (its flag raised); it resumes when run again."""


class ShardTaskFailed(BackfillError):
    """Shard tasks kept failing round after round: ``detail`` is the last task's error."""


@dataclass
class _Round:
    """Shard tasks sent and not yet finished, and how many rounds failed in a row."""

    outstanding: list[AsyncResult]
    failed_rounds: int = 0
    last_error: str = ""


async def run_distributed(
    config: BackfillConfig,
    config_text: str,
    app: Celery,
    *,
    base_dir: Path,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobOutcome:
    """Run (or resume) the job on the workers consuming ``app``'s queue; returns when its
    dataset is complete. Raises ``JobCancelled`` when its flag is raised (or this call
    is cancelled, which raises the flag), ``ShardTaskFailed`` when tasks keep failing,
    and what the store, sink or preflight raise."""
    spec = config.distributed
    blocking_sink = await open_checked_sink(config)
    sink = AsyncSink(blocking_sink)
    started = datetime.now(UTC)
    async with (
        open_shared_store(config) as store,
        CancelFlags.open(spec.redis_url, spec.key_prefix) as flags,
    ):
        await open_job(store, config, config_text)
        await flags.clear(config.name)
        await store.set_job_state(config.name, JobState.RUNNING)
        async with job_runner(config, store, sink, worker_id="coordinator") as runner:
            try:
                await runner.recover()
                plan = await asyncio.to_thread(
                    app.send_task, PLAN_TASK, args=[config_text, str(base_dir)]
                )
                await _wait(plan)
                await _drive(config, config_text, app, base_dir, store, runner, flags, on_progress)
                await runner.publish_unbatched()
            except asyncio.CancelledError:
                await flags.cancel(config.name)
                await store.set_job_state(config.name, JobState.CANCELLED, "cancelled")
                raise
            except JobCancelled:
                await store.set_job_state(config.name, JobState.CANCELLED, "cancelled")
                raise
            except BaseException as exc:
                await store.set_job_state(
                    config.name, JobState.FAILED, f"{type(exc).__name__}: {exc}"
                )
                raise
        return await finish_job(config, store, sink, started, runner)


async def _drive(
    config: BackfillConfig,
    config_text: str,
    app: Celery,
    base_dir: Path,
    store: SqlJobStore,
    runner: JobRunner,
    flags: CancelFlags,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    """The loop of the module docstring, until every DID is final."""
    seconds = _shard_seconds(app)
    round_ = _Round([])
    progress = Progress()
    while True:
        await runner.publish_committed()
        counts = await store.counts(config.name)
        _report(progress, counts, on_progress)
        if await flags.is_cancelled(config.name):
            await _wait_all(round_.outstanding)
            await runner.publish_committed()
            raise JobCancelled(f"job {config.name} was cancelled; run it again to resume")
        await asyncio.to_thread(_collect, round_)  # the result backend answers blocking
        if not round_.outstanding:
            if counts[DidState.IN_PROGRESS]:
                await runner.recover()  # claims nobody works on: their worker is gone
                continue
            if not counts[DidState.PENDING]:
                return
            # Pending but not due yet (a retry's backoff) means nothing to send this tick.
            pending = await store.pending_hosts(config.name)
            shards = cut_shards(pending, config.distributed.shard_size)
            round_.outstanding = [
                await asyncio.to_thread(
                    app.send_task, SHARD_TASK, args=[config_text, str(base_dir), shard, seconds]
                )
                for shard in shards
            ]
        await asyncio.sleep(_TICK)


def _shard_seconds(app: Celery) -> float:
    """A shard task's time budget: a third of the visibility timeout, so that a task is
    not handed out again while it runs (its in-flight work finishes after the budget)."""
    transport = app.conf.broker_transport_options or {}
    return float(transport.get("visibility_timeout", 3600)) / 3


def _collect(round_: _Round) -> None:
    """Drop finished tasks; a round whose tasks all failed counts towards giving up."""
    finished = [result for result in round_.outstanding if result.ready()]
    failures = [result for result in finished if result.failed()]
    round_.outstanding = [result for result in round_.outstanding if not result.ready()]
    for result in failures:
        round_.last_error = repr(result.result)
    if finished and len(failures) == len(finished) and not round_.outstanding:
        round_.failed_rounds += 1
        if round_.failed_rounds >= _MAX_FAILED_ROUNDS:
            raise ShardTaskFailed(
                f"shard tasks failed {round_.failed_rounds} rounds in a row; "
                + f"last: {round_.last_error}"
            )
    elif finished and len(failures) < len(finished):
        round_.failed_rounds = 0


def _report(
    progress: Progress,
    counts: dict[DidState, int],
    on_progress: Callable[[Progress], None] | None,
) -> None:
    progress.total = sum(counts.values())
    progress.done = progress.total - counts[DidState.PENDING] - counts[DidState.IN_PROGRESS]
    if on_progress is not None:
        on_progress(progress)


async def _wait(result: AsyncResult) -> None:
    """Until a task ends; raises its error if it failed."""
    while not await asyncio.to_thread(result.ready):  # noqa: ASYNC110 - polls the backend
        await asyncio.sleep(0.2)
    if result.failed():
        raise ShardTaskFailed(f"task {result.id} failed: {result.result!r}")


async def _wait_all(results: list[AsyncResult]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not await asyncio.to_thread(_all_ready, results):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def _all_ready(results: list[AsyncResult]) -> bool:
    return all(result.ready() for result in results)
