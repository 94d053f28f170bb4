"""Jobs run by the server itself: start, follow, cancel — the same engine as ``run``.

Each job runs as an asyncio task in the server's event loop (``run_job``). Its progress
and final state live in its own job store, as for a job run from the CLI, so status
survives a server restart and a cancelled or interrupted job resumes when started again.
Cancelling cancels the task: the engine stops within seconds (work in flight is dropped
and done again later, never half-written), then the job is marked ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bsky_backfill.api.registry import Registry, StartedJob
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import JobOutcome, job_metrics, run_job, store_location
from bsky_backfill.core.manager import Progress
from bsky_backfill.errors import JobNotFound, StoreError
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.state.model import JobState
from bsky_backfill.state.sql.engine import StoreOptions
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["HostProgress", "JobAlreadyRunning", "JobManager", "JobStatus", "RunJob"]

RunJob = Callable[..., Awaitable[JobOutcome]]
"""``run_job``'s shape (injectable for tests of the manager alone)."""


class JobAlreadyRunning(StoreError):
    """A job with this id is running on this server already."""


@dataclass(frozen=True, slots=True)
class HostProgress:
    """Repos finished on one PDS host during the current run."""

    host: str
    repos: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What ``GET /status/{job_id}`` answers (DESIGN.md "Interfaces")."""

    job_id: str
    state: JobState
    counts: dict[str, int]
    records: int
    hosts: list[HostProgress]
    started_at: datetime | None
    finished_at: datetime | None
    eta_seconds: float | None
    rate_per_second: float | None
    error: str | None
    config_name: str | None = None
    config_version: int | None = None


@dataclass
class _Live:
    """A job running in this process."""

    started: StartedJob
    metrics: JobMetrics
    task: asyncio.Task[None] | None = None
    progress: Progress | None = None
    error: str | None = None
    """Why the run stopped before its job store knew of it (a preflight refusal ...)."""


class JobManager:
    """Starts jobs as tasks, reports their status, cancels them."""

    def __init__(self, registry: Registry, *, run: RunJob = run_job) -> None:
        self._registry = registry
        self._run = run
        self._live: dict[str, _Live] = {}
        # Opened once per job, not per status poll: opening creates the schema if missing,
        # a write transaction that would contend with the job's own writes.
        self._stores: dict[str, SqlJobStore] = {}

    async def start(
        self,
        config: BackfillConfig,
        text: str,
        *,
        config_name: str | None = None,
        config_version: int | None = None,
    ) -> str:
        """Start (or resume, or refresh) the job ``config`` names; return its id.

        Raises ``JobAlreadyRunning`` if it runs here now.
        """
        job_id = config.name
        live = self._live.get(job_id)
        if live is not None and live.task is not None and not live.task.done():
            raise JobAlreadyRunning(f"job {job_id} is already running", job_id=job_id)
        started = StartedJob(
            job_id, config_name, config_version, _store_target(config), datetime.now(UTC)
        )
        await self._registry.record_job(started)
        live = self._live[job_id] = _Live(started, job_metrics(config))
        live.task = asyncio.create_task(self._drive(live, config, text), name=f"job {job_id}")
        return job_id

    async def _drive(self, live: _Live, config: BackfillConfig, text: str) -> None:
        def follow(progress: Progress) -> None:
            live.progress = progress

        try:
            await self._run(config, text, on_progress=follow, metrics=live.metrics)
        except asyncio.CancelledError:
            with contextlib.suppress(StoreError, OSError):
                store = await self._store(live.started.state_path)
                await store.set_job_state(
                    live.started.job_id, JobState.CANCELLED, "cancelled through the API"
                )
            raise
        except Exception as exc:  # the job's store has it too, when the job got that far
            live.error = f"{type(exc).__name__}: {exc}"

    async def _store(self, target: str) -> SqlJobStore:
        store = self._stores.get(target)
        if store is None:
            url, _, schema = target.partition("#")
            where = url if "://" in url else Path(url)
            opened = await SqlJobStore.open(where, StoreOptions(schema=schema or None))
            store = self._stores.setdefault(target, opened)  # another poll may have won
            if store is not opened:
                await opened.aclose()
        return store

    def metrics(self) -> dict[str, JobMetrics]:
        """The metrics of the latest run of each job this server started, by job id."""
        return {job_id: live.metrics for job_id, live in self._live.items()}

    async def cancel(self, job_id: str) -> JobStatus:
        """Stop a running job (it stays resumable); a job not running is left as it is.

        Raises ``JobNotFound`` for a job this server never started.
        """
        live = self._live.get(job_id)
        if live is not None and live.task is not None and not live.task.done():
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.task
        return await self.status(job_id)

    async def status(self, job_id: str) -> JobStatus:
        """The job's state, counts by DID state, records, per-host progress, rate and ETA.

        Raises ``JobNotFound`` for a job this server never started.
        """
        started = await self._started(job_id)
        live = self._live.get(job_id)
        running = live is not None and live.task is not None and not live.task.done()
        error = live.error if live is not None else None
        if not await _store_exists(started.state_path):
            return _not_begun(started, running, error)
        store = await self._store(started.state_path)
        job = await store.get_job(job_id)
        if job is None:
            return _not_begun(started, running, error)
        counts = {state.value: n for state, n in (await store.counts(job_id)).items() if n}
        records = await store.records_total(job_id)
        progress = live.progress if live is not None else None
        state, error = job.state, job.error
        if running and state is not JobState.CANCELLED:
            state = JobState.RUNNING
        elif state is JobState.RUNNING:  # its process ended mid-run (a restart, a crash)
            state, error = JobState.FAILED, "interrupted: start it again to resume"
        rate, eta = _rate_and_eta(progress) if running else (None, None)
        hosts = sorted(
            (HostProgress(h, n) for h, n in (progress.busiest if progress else {}).items()),
            key=lambda host: (-host.repos, host.host),
        )
        return JobStatus(
            job_id=job_id,
            state=state,
            counts=counts,
            records=records,
            hosts=hosts,
            started_at=job.started_at,
            finished_at=None if running else job.finished_at,
            eta_seconds=eta,
            rate_per_second=rate,
            error=error,
            config_name=started.config_name,
            config_version=started.config_version,
        )

    async def jobs(self) -> list[JobStatus]:
        """The status of every job this server started, newest first."""
        return [await self.status(job.job_id) for job in await self._registry.jobs()]

    async def wait(self, job_id: str) -> None:
        """Until the job's current run ends (for tests and shutdown)."""
        live = self._live.get(job_id)
        if live is not None and live.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(live.task)

    async def aclose(self) -> None:
        """Cancel every running job (each stays resumable), wait for them, close stores."""
        for job_id in list(self._live):
            await self.cancel(job_id)
        stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            await store.aclose()

    async def _started(self, job_id: str) -> StartedJob:
        live = self._live.get(job_id)
        if live is not None:
            return live.started
        for job in await self._registry.jobs():
            if job.job_id == job_id:
                return job
        raise JobNotFound(f"no job {job_id!r} was started on this server", job_id=job_id)


async def _store_exists(target: str) -> bool:
    """A database server's store always exists; a SQLite one once its job has begun."""
    return "://" in target or await asyncio.to_thread(Path(target).is_file)


def _store_target(config: BackfillConfig) -> str:
    """Where the job's store is, as :class:`StartedJob` keeps it."""
    target, options = store_location(config)
    return str(target) + (f"#{options.schema}" if options.schema else "")


def _not_begun(started: StartedJob, running: bool, error: str | None) -> JobStatus:
    """A job whose store has no record yet: starting, or refused before it began."""
    state = JobState.FAILED if error and not running else JobState.PENDING
    return JobStatus(
        started.job_id,
        state,
        {},
        0,
        [],
        started.started_at,
        None,
        None,
        None,
        error,
        started.config_name,
        started.config_version,
    )


def _rate_and_eta(progress: Progress | None) -> tuple[float | None, float | None]:
    """Repos per second this run, and seconds left at that rate (None until known)."""
    if progress is None or progress.done == 0:
        return None, None
    elapsed = max(time.monotonic() - progress.started, 1e-6)
    rate = progress.done / elapsed
    left = max(progress.total - progress.done, 0)
    return round(rate, 3), round(left / rate, 1)
