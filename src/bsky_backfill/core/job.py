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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp

from bsky_backfill.atproto.identity import IdentityOptions, IdentityResolver
from bsky_backfill.atproto.xrpc import XrpcClient, XrpcOptions
from bsky_backfill.cloud.aws import AwsTarget
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.limits import LimiterOptions
from bsky_backfill.core.manager import JobOptions, JobRunner, Progress
from bsky_backfill.core.models import DidState
from bsky_backfill.core.netguard import PublicOnlyResolver
from bsky_backfill.core.outputs import open_sink, preflight, work_dir
from bsky_backfill.core.select import Selection
from bsky_backfill.core.worker import WorkerOptions
from bsky_backfill.sinks import AsyncSink, Manifest
from bsky_backfill.sources.derived import derive_dids
from bsky_backfill.sources.files import read_did_file, read_values
from bsky_backfill.sources.pds import list_repos
from bsky_backfill.sources.s3 import read_s3_dids
from bsky_backfill.sources.sqlite import read_did_query
from bsky_backfill.state.identity_cache import StoreIdentityCache
from bsky_backfill.state.model import JobState
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["JobOutcome", "run_job", "state_path"]


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


async def _dids(config: BackfillConfig, client: XrpcClient) -> list[str]:
    source = config.source
    if source.type == "inline":
        return list(source.dids)
    if source.type == "file":
        return list(read_did_file(Path(source.path), source.column))
    if source.type == "sqlite":
        return list(read_did_query(Path(source.path), source.query))
    if source.type == "derived":
        return list(derive_dids(Path(source.dataset), source.relations))
    if source.type == "s3":
        target = AwsTarget(source.region, source.endpoint_url)
        return await asyncio.to_thread(list, read_s3_dids(source.uri, source.column, target))
    return [did async for did in list_repos(client, source.hosts)]


def _options(config: BackfillConfig, spool: Path) -> JobOptions:
    processing = config.processing
    rate = processing.requests_per_second
    return JobOptions(
        job_id=config.name,
        worker=WorkerOptions(
            job_id=config.name,
            selection=_selection(config),
            verify=config.verify,
            max_repo_bytes=config.network.max_repo_bytes,
            spool_dir=spool,
        ),
        limiter=LimiterOptions(rate=rate, max_rate=max(rate, 50.0), min_rate=min(rate, 0.2)),
        max_concurrent_hosts=processing.max_concurrent_pds,
        max_retries=processing.max_retries,
        batch_size=processing.batch_size,
        allow_private_addresses=config.network.allow_private_addresses,
    )


@contextlib.asynccontextmanager
async def _client(config: BackfillConfig) -> AsyncIterator[XrpcClient]:
    """The job's HTTP client; unless private addresses are allowed, every host name is
    resolved through ``PublicOnlyResolver`` (a DID document may name any host)."""
    options = XrpcOptions(max_body_bytes=config.network.max_repo_bytes)
    if config.network.allow_private_addresses:
        async with XrpcClient.open(options) as client:
            yield client
        return
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver())
    try:
        async with XrpcClient.open(options, connector=connector) as client:
            yield client
    finally:
        await connector.close()


async def run_job(
    config: BackfillConfig,
    config_text: str,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobOutcome:
    """Run (or resume) the job ``config`` describes; returns when its dataset is complete.

    Raises ``StorageRefused`` (a missing bucket or table, access denied) from the
    preflight before any work, ``ConfigError`` for an unreadable DID source, and whatever
    the store or sink raise when they cannot go on (the job is then marked failed and a
    later run resumes it).
    """
    output = work_dir(config)
    spool = output / "_state" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    blocking_sink = open_sink(config)
    await asyncio.to_thread(preflight, config, blocking_sink)
    sink = AsyncSink(blocking_sink)
    started = datetime.now(UTC)
    store = await SqlJobStore.open(state_path(config))
    try:
        job = await store.get_job(config.name)
        if job is None:
            job = await store.create_job(
                config.name, config.name, config_text, config.config_hash()
            )
        async with _client(config) as client:
            web_scheme: Literal["http", "https"] = (
                "http" if config.network.allow_private_addresses else "https"
            )
            cache = StoreIdentityCache(store)
            resolver = IdentityResolver(
                client,
                IdentityOptions(
                    plc_url=str(config.identity.plc_url),
                    ttl=float(config.identity.cache_ttl_seconds),
                    web_scheme=web_scheme,
                ),
                cache=cache,
            )
            runner = JobRunner(
                _options(config, spool),
                store=store,
                sink=sink,
                client=client,
                resolver=resolver,
                identity_cache=cache,
                on_progress=on_progress,
            )
            finished_before = job.state == JobState.COMPLETED
            await store.set_job_state(config.name, JobState.RUNNING)
            try:
                if finished_before:
                    await runner.refresh()
                await runner.run([] if finished_before else await _dids(config, client))
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                await store.set_job_state(config.name, JobState.FAILED, error)
                raise
        finished = datetime.now(UTC)
        await sink.finish(Manifest(config.name, config.redacted(), started, finished))
        await store.set_job_state(config.name, JobState.COMPLETED)
        counts = {state.value: n for state, n in (await store.counts(config.name)).items() if n}
        records = await store.records_total(config.name)
        return JobOutcome(config.name, counts, records, blocking_sink.location, runner.summary())
    finally:
        await store.aclose()
