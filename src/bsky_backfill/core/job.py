"""A job from a validated config to a finished dataset: the glue the CLI (and later the
API) calls. Opens the state store next to the output, the sink, the HTTP client and the
resolver; reads the DIDs from the source; runs :class:`JobRunner`; writes the manifest.

The job id is the config's ``name``: running the same config again resumes the job (a
killed run loses nothing); running a finished job again refreshes it — only repos whose
rev or status changed (and failed ones) are fetched again, their rows replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import structlog

from bsky_backfill.atproto.identity import IdentityOptions, IdentityResolver
from bsky_backfill.atproto.xrpc import XrpcClient, XrpcOptions
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.limits import HostLimiter, LimiterOptions
from bsky_backfill.core.manager import JobOptions, JobRunner, Progress
from bsky_backfill.core.models import DidState
from bsky_backfill.core.netguard import PublicOnlyResolver
from bsky_backfill.core.outputs import open_sink, preflight, work_dir
from bsky_backfill.core.select import Selection
from bsky_backfill.core.worker import WorkerOptions
from bsky_backfill.errors import BackfillError, JobCancelled
from bsky_backfill.observability.alerts import alert_for, send_alert
from bsky_backfill.observability.logs import job_context
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.sinks import AsyncSink, Manifest, Sink
from bsky_backfill.sinks.base import write_errors
from bsky_backfill.sources.files import read_did_file, read_values
from bsky_backfill.sources.pds import list_repos
from bsky_backfill.sources.sqlite import read_did_query
from bsky_backfill.state.identity_cache import StoreIdentityCache
from bsky_backfill.state.model import Job, JobState
from bsky_backfill.state.protocol import JobStore
from bsky_backfill.state.sql.engine import StoreOptions
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = [
    "JobOutcome",
    "finish_job",
    "job_metrics",
    "job_runner",
    "limiter_options",
    "mark_stopped",
    "observed",
    "open_checked_sink",
    "open_job",
    "run_job",
    "source_dids",
    "state_path",
    "store_location",
]

logger = structlog.get_logger(__name__)

_IDENTITIES_IN_MEMORY = 5_000
"""Identities of DIDs in flight (hosts x lanes x 3 claims: ~2,400 at 50 hosts x 16 lanes)
fit; the rest are read back from the job store per claimed chunk (~0.55 KB each)."""


@dataclass(frozen=True)
class JobOutcome:
    """How a run ended: DIDs by final state, records kept, where the dataset is (a local
    folder, ``s3://...`` or ``dynamodb:<table>``) and the run's figures."""

    job_id: str
    counts: dict[str, int]
    records: int
    output: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.counts.get(DidState.FAILED.value, 0)


def state_path(config: BackfillConfig) -> Path:
    """Where the job's SQLite state lives: ``<work dir>/_state/jobs.sqlite`` (the work dir
    is the dataset's own folder for local sinks)."""
    return work_dir(config) / "_state" / "jobs.sqlite"


def store_location(config: BackfillConfig) -> tuple[str | Path, StoreOptions]:
    """The job's store: the shared PostgreSQL one of a distributed job
    (``distributed.state_url`` and schema), else the SQLite file :func:`state_path`."""
    shared = config.distributed
    if shared.state_url is None:
        return state_path(config), StoreOptions()
    return shared.state_url, StoreOptions(schema=shared.state_schema)


def _selection(config: BackfillConfig) -> Selection:
    subjects = None
    if config.filters.subject_uris is not None:
        spec = config.filters.subject_uris
        subjects = frozenset(_table_values(Path(spec.path), spec.column))
    return Selection(
        collections=frozenset(config.record_types),
        start=config.time_range.start_date,
        end=config.time_range.end_date,
        subject_uris=subjects,
    )


def _table_values(path: Path, column: str) -> Iterator[str]:
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        yield from read_values(file, column)


async def source_dids(config: BackfillConfig, client: XrpcClient) -> list[str]:
    """The DIDs the config's source lists (duplicates and invalid ones included)."""
    source = config.source
    if source.type == "inline":
        return list(source.dids)
    if source.type == "file":
        return list(read_did_file(Path(source.path), source.column))
    if source.type == "sqlite":
        return list(read_did_query(Path(source.path), source.query))
    # Imported when used: pyarrow.dataset (with pandas) and boto3 cost every other job
    # ~80 MB of memory (BENCHMARKS.md, peak memory).
    if source.type == "derived":
        from bsky_backfill.sources.derived import derive_dids

        return list(derive_dids(Path(source.dataset), source.relations))
    if source.type == "s3":
        from bsky_backfill.cloud.aws import AwsTarget
        from bsky_backfill.sources.s3 import read_s3_dids

        target = AwsTarget(source.region, source.endpoint_url)
        return await asyncio.to_thread(list, read_s3_dids(source.uri, source.column, target))
    return [did async for did in list_repos(client, source.hosts)]


def limiter_options(config: BackfillConfig) -> LimiterOptions:
    """Per-host pacing: the config's rate to start with, headers may raise it to 50/s."""
    rate = config.processing.requests_per_second
    return LimiterOptions(rate=rate, max_rate=max(rate, 50.0), min_rate=min(rate, 0.2))


def _options(config: BackfillConfig, spool: Path, worker_id: str) -> JobOptions:
    processing = config.processing
    return JobOptions(
        job_id=config.name,
        worker=WorkerOptions(
            job_id=config.name,
            selection=_selection(config),
            verify=config.verify,
            max_repo_bytes=config.network.max_repo_bytes,
            spool_dir=spool,
        ),
        limiter=limiter_options(config),
        max_concurrent_hosts=processing.max_concurrent_pds,
        max_retries=processing.max_retries,
        batch_size=processing.batch_size,
        worker_id=worker_id,
        allow_private_addresses=config.network.allow_private_addresses,
    )


@contextlib.asynccontextmanager
async def _client(config: BackfillConfig, metrics: JobMetrics) -> AsyncIterator[XrpcClient]:
    """The job's HTTP client, counting its requests in ``metrics``; unless private
    addresses are allowed, every host name is resolved through ``PublicOnlyResolver`` (a
    DID document may name any host)."""
    options = XrpcOptions(max_body_bytes=config.network.max_repo_bytes)
    if config.network.allow_private_addresses:
        async with XrpcClient.open(options, observer=metrics) as client:
            yield client
        return
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver())
    try:
        async with XrpcClient.open(options, connector=connector, observer=metrics) as client:
            yield client
    finally:
        await connector.close()


def job_metrics(config: BackfillConfig) -> JobMetrics:
    """Fresh metrics for a run of ``config``'s job."""
    return JobMetrics(config.name, host_labels=config.monitoring.host_label_limit)


async def observed(
    config: BackfillConfig, metrics: JobMetrics, work: Awaitable[JobOutcome]
) -> JobOutcome:
    """``work`` (a job run) with ``job_id`` on its log events, its state in ``metrics``,
    its start and end logged, and an alert when it fails or ends with failed DIDs."""
    with job_context(config.name):
        metrics.job_state(JobState.RUNNING)
        logger.info("job.started", source=config.source.type, sink=config.storage.type)
        try:
            outcome = await work
        except (JobCancelled, asyncio.CancelledError, KeyboardInterrupt):
            metrics.job_state(JobState.CANCELLED)
            logger.warning("job.cancelled")
            raise
        except Exception as exc:
            metrics.job_state(JobState.FAILED)
            logger.error("job.failed", error=f"{type(exc).__name__}: {exc}")
            await send_alert(config, alert_for(config.name, error=exc))
            raise
        metrics.job_state(JobState.COMPLETED)
        metrics.dids(outcome.counts)
        logger.info("job.finished", counts=outcome.counts, records=outcome.records)
        await send_alert(config, alert_for(config.name, counts=outcome.counts))
        return outcome


async def run_job(
    config: BackfillConfig,
    config_text: str,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    metrics: JobMetrics | None = None,
) -> JobOutcome:
    """Run (or resume) the job ``config`` describes; returns when its dataset is complete.
    ``metrics``: where its figures go (scraped by whoever made them).

    Raises ``StorageRefused`` (a missing bucket or table, access denied) from the
    preflight before any work, ``ConfigError`` for an unreadable DID source, and whatever
    the store or sink raise when they cannot go on (the job is then marked failed and a
    later run resumes it).
    """
    metrics = metrics if metrics is not None else job_metrics(config)
    return await observed(config, metrics, _run_job(config, config_text, on_progress, metrics))


async def _run_job(
    config: BackfillConfig,
    config_text: str,
    on_progress: Callable[[Progress], None] | None,
    metrics: JobMetrics,
) -> JobOutcome:
    blocking_sink = await open_checked_sink(config)
    sink = AsyncSink(blocking_sink)
    started = datetime.now(UTC)
    store = await SqlJobStore.open(state_path(config))
    try:
        job = await open_job(store, config, config_text)
        async with job_runner(
            config, store, sink, on_progress=on_progress, metrics=metrics
        ) as runner:
            finished_before = job.state == JobState.COMPLETED
            await store.set_job_state(config.name, JobState.RUNNING)
            try:
                if finished_before:
                    await runner.refresh()
                dids = [] if finished_before else await source_dids(config, runner.client)
                await runner.run(dids)
            except BaseException as exc:
                await mark_stopped(store, config.name, JobState.FAILED, exc)
                raise
        return await finish_job(config, store, sink, started, runner)
    finally:
        await store.aclose()


async def mark_stopped(
    store: JobStore, job_id: str, state: JobState, cause: BaseException | str
) -> None:
    """Record why a job stopped, if the store still can: a store that is the reason (a
    full disk) must not replace the error the user needs to see with its own."""
    detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    try:
        await store.set_job_state(job_id, state, detail)
    except BackfillError as exc:
        logger.warning("job.state_not_recorded", state=state.value, error=str(exc))


async def open_checked_sink(config: BackfillConfig) -> Sink:
    """The job's sink, after the preflight (bucket / table exists and is writable)."""
    spool = work_dir(config) / "_state" / "spool"
    with write_errors(spool):
        spool.mkdir(parents=True, exist_ok=True)
    sink = open_sink(config)
    await asyncio.to_thread(preflight, config, sink)
    return sink


async def open_job(store: JobStore, config: BackfillConfig, config_text: str) -> Job:
    """The job ``config`` names, created in ``store`` on its first run."""
    job = await store.get_job(config.name)
    if job is None:
        job = await store.create_job(config.name, config.name, config_text, config.config_hash())
    return job


async def finish_job(
    config: BackfillConfig, store: JobStore, sink: AsyncSink, started: datetime, runner: JobRunner
) -> JobOutcome:
    """Write the manifest (last), mark the job completed, and say how it ended."""
    finished = datetime.now(UTC)
    await sink.finish(Manifest(config.name, config.redacted(), started, finished))
    await store.set_job_state(config.name, JobState.COMPLETED)
    counts = {state.value: n for state, n in (await store.counts(config.name)).items() if n}
    records = await store.records_total(config.name)
    return JobOutcome(config.name, counts, records, sink.sink.location, runner.summary())


@contextlib.asynccontextmanager
async def job_runner(
    config: BackfillConfig,
    store: JobStore,
    sink: AsyncSink,
    *,
    worker_id: str = "local",
    on_progress: Callable[[Progress], None] | None = None,
    limiter_for: Callable[[str], HostLimiter] | None = None,
    publish: bool = True,
    metrics: JobMetrics | None = None,
) -> AsyncIterator[JobRunner]:
    """A :class:`JobRunner` for ``config`` with its HTTP client and identity resolver
    (cached in ``store``), open for as long as the context lasts; its figures go to
    ``metrics`` (default: fresh ones)."""
    spool = work_dir(config) / "_state" / "spool"
    metrics = metrics if metrics is not None else job_metrics(config)
    async with _client(config, metrics) as client:
        web_scheme: Literal["http", "https"] = (
            "http" if config.network.allow_private_addresses else "https"
        )
        # Identities are fetched back from the store per claimed chunk: memory need not hold
        # a whole job's (55 MB per 100k DIDs).
        cache = StoreIdentityCache(store, max_entries=_IDENTITIES_IN_MEMORY)
        resolver = IdentityResolver(
            client,
            IdentityOptions(
                plc_url=str(config.identity.plc_url),
                ttl=float(config.identity.cache_ttl_seconds),
                web_scheme=web_scheme,
            ),
            cache=cache,
        )
        yield JobRunner(
            _options(config, spool, worker_id),
            store=store,
            sink=sink,
            client=client,
            resolver=resolver,
            identity_cache=cache,
            on_progress=on_progress,
            limiter_for=limiter_for,
            publish=publish,
            metrics=metrics,
        )
