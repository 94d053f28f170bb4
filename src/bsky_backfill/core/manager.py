"""Runs one job: plan its DIDs, resolve them, fetch them host by host, publish the rows.

Order of work (each step resumable; a killed job restarted does only what is left):
1. recover: give back claims a dead run held; publish committed batches, discard others;
2. add the DIDs (invalid ones become ``invalid_did`` at once, with no request);
3. resolve identities, many at once: the PDS host of each DID (failures are statuses);
4. fetch: one worker per PDS host, up to ``max_concurrent_hosts`` at a time, each pacing
   itself with its own :class:`HostLimiter` — a slow or rate-limited host delays only
   its own DIDs, so the job's wall time approaches max over hosts of (DIDs / host rate);
5. publish final states that no batch carried (resolution failures) and the manifest.

Output goes through :class:`BatchWriter`: the exactly-once protocol of
:mod:`bsky_backfill.state.protocol` (stage -> commit -> publish -> mark published).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from bsky_backfill.aio import one_error
from bsky_backfill.atproto.identity import Identity, IdentityResolver
from bsky_backfill.atproto.syntax import is_valid_did
from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.core.batches import BatchWriter
from bsky_backfill.core.limits import HostLimiter, LimiterOptions
from bsky_backfill.core.models import DidState, RepoResult, RepoRow
from bsky_backfill.core.netguard import check_endpoint
from bsky_backfill.core.worker import Done, Failed, Retry, WorkerOptions, process_did
from bsky_backfill.errors import (
    BackfillError,
    DidNotFound,
    DidTombstoned,
    InvalidDid,
    RateLimited,
    RepoUnavailable,
    RetryableError,
)
from bsky_backfill.observability.metrics import JobMetrics
from bsky_backfill.sinks.base import AsyncSink
from bsky_backfill.state.identity_cache import StoreIdentityCache
from bsky_backfill.state.model import Claim, host_of
from bsky_backfill.state.protocol import JobStore

__all__ = ["JobOptions", "JobRunner", "Progress"]

_ADD_CHUNK = 10_000
_LATEST_COMMIT = "com.atproto.sync.getLatestCommit"
_RESOLVE_PAGE = 2_000
_COUNTS_SECONDS: Final = 10.0  # DIDs by state, for metrics: a query over the whole job

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How one job runs (built from the config by the CLI / API)."""

    job_id: str
    worker: WorkerOptions
    limiter: LimiterOptions = LimiterOptions()
    max_concurrent_hosts: int = 32
    max_retries: int = 3
    batch_size: int = 100
    flush_seconds: float = 2.0
    resolve_concurrency: int = 32
    worker_id: str = "local"
    retry_base_seconds: float = 1.0
    allow_private_addresses: bool = False


@dataclass(slots=True)
class Progress:
    """What the job has done so far, for progress displays."""

    total: int = 0
    done: int = 0
    records: int = 0
    requests: int = 0
    rate_limited: int = 0
    started: float = field(default_factory=time.monotonic)
    busiest: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _InLanes:
    """A host worker's claims handed to its lanes and not finished (they may come back),
    and the event a lane sets on finishing one."""

    busy: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class JobRunner:
    """Runs a job to its end; see the module docstring. One runner per job run."""

    def __init__(
        self,
        options: JobOptions,
        *,
        store: JobStore,
        sink: AsyncSink,
        client: XrpcClient,
        resolver: IdentityResolver,
        identity_cache: StoreIdentityCache | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        limiter_for: Callable[[str], HostLimiter] | None = None,
        publish: bool = True,
        metrics: JobMetrics | None = None,
    ) -> None:
        """``identity_cache``: the resolver's cache when it is kept in the store; it is
        loaded and saved around each page of resolutions, so a resumed or repeated job
        resolves again only what expired. ``limiter_for``: host -> its limiter (default:
        one :class:`HostLimiter` per host in this process; the distributed runner shares
        them through Redis). ``publish=False``: batches are staged and committed only, and
        one publisher elsewhere publishes them (many workers, one dataset). ``metrics``:
        where the run's figures go (default: metrics of its own)."""
        self.options = options
        self.metrics = metrics if metrics is not None else JobMetrics(options.job_id)
        self._identity_cache = identity_cache
        self.store = store
        self.client = client
        self.resolver = resolver
        self.progress = Progress()
        self._on_progress = on_progress or (lambda _: None)
        self._writer = BatchWriter(
            store,
            sink,
            job_id=options.job_id,
            worker_id=options.worker_id,
            batch_size=options.batch_size,
            publish=publish,
            metrics=self.metrics,
        )
        self._limiters: dict[str, HostLimiter] = {}
        self.metrics.watch_limiters(lambda: self._limiters)
        self._hosts_active = 0
        self._new_limiter = limiter_for or (lambda _host: HostLimiter(options.limiter))
        self._reader: Executor | None = None

    @property
    def job_id(self) -> str:
        return self.options.job_id

    async def run(self, dids: Iterable[str]) -> None:
        """Do every step; returns when every DID is final and its rows are published."""
        await self.recover()
        await self.plan(dids)
        await self._flushing(self._fetch())
        await self.publish_unbatched()

    async def plan(self, dids: Iterable[str]) -> None:
        """Add the DIDs and resolve each one's PDS host (steps 2 and 3)."""
        await self._add(dids)
        await self._resolve()
        per_host = await self.store.host_counts(self.job_id)
        self.metrics.hosts.rank({h: sum(c.values()) for h, c in per_host.items() if h})
        logger.info("job.planned", dids=self.progress.total, hosts=len(per_host))

    async def run_shard(self, budgets: Mapping[str, int], *, seconds: float) -> None:
        """Fetch up to ``budgets[host]`` DIDs of each host, claiming none after ``seconds``
        (one task of a distributed job, kept shorter than the broker's visibility timeout;
        other workers may be taking the same hosts' DIDs at once), then write the rest."""
        gate = asyncio.Semaphore(self.options.max_concurrent_hosts)
        deadline = time.monotonic() + seconds

        async def hosts() -> None:
            async with asyncio.TaskGroup() as group:
                for host, budget in budgets.items():
                    group.create_task(self._host_worker(host, gate, budget, deadline))

        await self._flushing(hosts())

    async def recover_worker(self, worker_id: str) -> None:
        """Take back what a dead (or stopped) worker of this job held; others go on."""
        await self._writer.recover_worker(worker_id)

    async def publish_committed(self) -> int:
        """Publish the batches workers committed (the one publisher of a distributed job)."""
        return await self._writer.publish_committed()

    async def publish_unbatched(self) -> None:
        """Publish final states no batch carried (DIDs that failed to resolve)."""
        await self._writer.publish_unbatched()

    async def recover(self) -> None:
        """Take back every claim of a job with no live workers; publish what was committed."""
        await self._writer.recover()

    async def _flushing(self, work: Coroutine[Any, Any, None]) -> None:
        """``work``, with batches flushed every ``flush_seconds`` meanwhile and at the end.

        Repos are read in one thread of their own: reading holds the GIL throughout, so
        more threads add no speed, only GIL hand-offs (measured: 92k -> 121k records/s
        per core end to end; benchmarks/bench_e2e.py).
        """
        reader = self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.job_id}")
        helpers = [
            asyncio.create_task(self._flush_periodically()),
            asyncio.create_task(self._count_periodically()),
        ]
        try:
            with one_error():
                await work
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            reader.shutdown(wait=False, cancel_futures=True)
            self._reader = None
        await self._writer.flush()
        await self.report_counts()

    async def report_counts(self) -> dict[DidState, int]:
        """The job's DIDs by state, from the store, also set in the metrics."""
        counts = await self.store.counts(self.job_id)
        self.metrics.dids({state.value: n for state, n in counts.items()})
        return counts

    async def refresh(self) -> int:
        """Before re-running a finished job: ask each DID's PDS for its latest commit and
        reopen the DIDs whose repo (rev) or status changed, and those that failed. Their
        new rows replace the old ones when published. Returns how many were reopened."""
        rows = [row async for row in self.store.repos(self.job_id)]
        gate = asyncio.Semaphore(self.options.resolve_concurrency)
        changed = await asyncio.gather(*(self._changed(row, gate) for row in rows))
        dids = [row.did for row, change in zip(rows, changed, strict=True) if change]
        return await self.store.reopen(self.job_id, dids) if dids else 0

    async def _changed(self, row: RepoRow, gate: asyncio.Semaphore) -> bool:
        if row.status == DidState.INVALID_DID:
            return False
        if row.status == DidState.FAILED or not row.pds:
            return True
        limiter = self._limiter(host_of(row.pds))
        async with gate:
            try:
                async with limiter.slot():
                    answer = await self.client.get_json(row.pds, _LATEST_COMMIT, {"did": row.did})
            except RateLimited as exc:
                limiter.rate_limited(exc.retry_after, exc.remaining, exc.reset_at)
                return True  # cannot tell now: fetching it again is always correct
            except RepoUnavailable as exc:
                return row.status != DidState(exc.status)
            except BackfillError:
                return True
        limiter.observe(answer.rate_limit)
        return row.status != DidState.COMPLETE or answer.data.get("rev") != row.rev

    async def _add(self, dids: Iterable[str]) -> None:
        chunk: list[str] = []
        for did in dids:
            if not is_valid_did(did):
                if await self.store.add_final(self.job_id, did[:2048], DidState.INVALID_DID):
                    self.metrics.repo_finished(DidState.INVALID_DID)
                continue
            chunk.append(did)
            if len(chunk) >= _ADD_CHUNK:
                await self.store.add_dids(self.job_id, chunk)
                chunk = []
        if chunk:
            await self.store.add_dids(self.job_id, chunk)
        counts = await self.report_counts()
        self.progress.total = sum(counts.values())

    async def _resolve(self) -> None:
        """Find each pending DID's PDS, many at a time; failures become final states."""
        gate = asyncio.Semaphore(self.options.resolve_concurrency)
        after: str | None = None
        while page := await self.store.unresolved(self.job_id, limit=_RESOLVE_PAGE, after=after):
            after = page[-1]
            if self._identity_cache is not None:
                await self._identity_cache.prefetch(page, time.time())
            found: list[Identity | None] = await asyncio.gather(
                *(self._resolve_one(did, gate) for did in page)
            )
            if self._identity_cache is not None:
                await self._identity_cache.flush()
            resolved = [(i.did, i.handle, i.pds) for i in found if i is not None]
            if resolved:
                await self.store.set_identities(self.job_id, resolved)

    async def _resolve_one(self, did: str, gate: asyncio.Semaphore) -> Identity | None:
        async with gate:
            for attempt in range(self.options.max_retries + 1):
                try:
                    return await self.resolver.resolve(did)
                except (DidNotFound, DidTombstoned, InvalidDid) as exc:
                    state = (
                        DidState.INVALID_DID if isinstance(exc, InvalidDid) else DidState.NOT_FOUND
                    )
                    error = f"{type(exc).__name__}: {exc}"
                    if await self.store.finish_unavailable(self.job_id, did, state, error):
                        self.metrics.repo_finished(state)
                    logger.info("did.unresolved", did=did, status=state.value, error=error)
                    return None
                except RetryableError as exc:
                    if attempt == self.options.max_retries:
                        await self._fail(did, exc)
                        return None
                    delay = self._backoff(attempt + 1)
                    self.metrics.retry(exc.host, type(exc).__name__)
                    logger.info(
                        "did.resolve_retry",
                        did=did,
                        host=exc.host,
                        attempt=attempt + 1,
                        error=str(exc),
                        delay=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                except BackfillError as exc:
                    await self._fail(did, exc)
                    return None
        return None

    async def _fail(self, did: str, exc: BackfillError) -> None:
        if await self.store.fail(self.job_id, did, type(exc).__name__, str(exc)):
            self.metrics.repo_finished(DidState.FAILED)
        logger.warning("did.failed", did=did, host=exc.host, error=f"{type(exc).__name__}: {exc}")
        self.progress.done += 1

    async def _fetch(self) -> None:
        """Run host workers until no host has work left (due now or later)."""
        gate = asyncio.Semaphore(self.options.max_concurrent_hosts)
        while hosts := await self._hosts_with_work():
            async with asyncio.TaskGroup() as group:
                for host in hosts:
                    group.create_task(self._host_worker(host, gate))
            # The round's results waiting for a batch keep their DIDs in progress: written
            # now, or the next round would find those hosts busy, start workers with
            # nothing to claim, and spin until the periodic flush (measured: ~30 % of a
            # quick benchmark job's CPU, in one run in two).
            await self._writer.flush()

    async def _hosts_with_work(self) -> list[str]:
        per_host = await self.store.host_counts(self.job_id)
        busy = (DidState.PENDING, DidState.IN_PROGRESS)
        return sorted(
            host
            for host, counts in per_host.items()
            if host is not None and any(counts.get(state, 0) for state in busy)
        )

    def _limiter(self, host: str) -> HostLimiter:
        if host not in self._limiters:
            self._limiters[host] = self._new_limiter(host)
        return self._limiters[host]

    async def _host_worker(
        self,
        host: str,
        gate: asyncio.Semaphore,
        budget: int | None = None,
        deadline: float | None = None,
    ) -> None:
        """All of one host's DIDs (at most ``budget`` claims, none after the monotonic
        ``deadline``): a feeder claims them in chunks (one transaction per chunk, not
        per DID) and ``max_in_flight`` lanes process them."""
        async with gate:
            limiter = self._limiter(host)
            lanes = self.options.limiter.max_in_flight
            # Bounded: the feeder claims a chunk, then waits while lanes take from it.
            queue: asyncio.Queue[Claim | None] = asyncio.Queue(maxsize=lanes)
            in_lanes = _InLanes()
            self._hosts_active += 1
            self.metrics.queue_depth("hosts_active", self._hosts_active)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._feed(host, queue, lanes, in_lanes, budget, deadline))
                    for _ in range(lanes):
                        group.create_task(self._lane(queue, limiter, in_lanes))
            finally:
                self._hosts_active -= 1
                self.metrics.queue_depth("hosts_active", self._hosts_active)

    async def _feed(
        self,
        host: str,
        queue: asyncio.Queue[Claim | None],
        lanes: int,
        in_lanes: _InLanes,
        budget: int | None,
        deadline: float | None,
    ) -> None:
        left = budget
        while (left is None or left > 0) and (deadline is None or time.monotonic() < deadline):
            in_lanes.finished.clear()
            want = 2 * lanes if left is None else min(2 * lanes, left)
            claims = await self.store.claim(
                self.job_id, want, worker_id=self.options.worker_id, host=host
            )
            if claims and self._identity_cache is not None:
                # Memory keeps only the latest identities: bring these back from the store.
                await self._identity_cache.prefetch([c.did for c in claims], time.time())
            if left is not None:
                left -= len(claims)
            for claim in claims:
                in_lanes.busy += 1
                await queue.put(claim)
            if claims:
                continue
            # A DID in a lane may still be put back (a 429, a retry): wait for it here,
            # not in the next round, which starts only when every host is done. Claim
            # again when a lane finishes one (polling the store meanwhile cost a job with
            # a backlog of repos to read ~30 % more CPU), or every 0.2 s while DIDs put
            # back for later wait to be due.
            if in_lanes.busy > 0:
                await in_lanes.finished.wait()
                continue
            if not await self._waiting_on(host):
                break
            await asyncio.sleep(0.2)
        for _ in range(lanes):
            await queue.put(None)

    async def _lane(
        self, queue: asyncio.Queue[Claim | None], limiter: HostLimiter, in_lanes: _InLanes
    ) -> None:
        while (claim := await queue.get()) is not None:
            try:
                await self._process(claim, limiter)
            finally:
                in_lanes.busy -= 1
                in_lanes.finished.set()

    async def _waiting_on(self, host: str) -> bool:
        counts = (await self.store.host_counts(self.job_id)).get(host, {})
        return counts.get(DidState.PENDING, 0) > 0

    async def _process(self, claim: Claim, limiter: HostLimiter) -> None:
        started = time.perf_counter()
        try:
            identity = await self.resolver.resolve(claim.did)
            check_endpoint(
                identity.pds, allow_private=self.options.allow_private_addresses, did=claim.did
            )
        except BackfillError as exc:
            await self._finish(claim, self._failed_row(claim.did, exc), started)
            return
        outcome = await process_did(
            identity,
            client=self.client,
            limiter=limiter,
            options=self.options.worker,
            reader=self._reader,
        )
        self.progress.requests = sum(lim.requests for lim in self._limiters.values())
        self.progress.rate_limited = sum(lim.rate_limited_count for lim in self._limiters.values())
        if isinstance(outcome, Done):
            await self._finish(claim, outcome.result, started)
        elif isinstance(outcome, Failed):
            await self._finish(claim, self._failed_row(claim.did, outcome.error, identity), started)
        elif isinstance(outcome, Retry) and not outcome.counts_attempt:
            self._retrying(claim, identity, outcome.error, delay=None)
            await self.store.release(self.job_id, [claim.did], worker_id=self.options.worker_id)
        elif claim.attempts > self.options.max_retries:
            await self._finish(claim, self._failed_row(claim.did, outcome.error, identity), started)
        else:
            delay = self._backoff(claim.attempts)
            self._retrying(claim, identity, outcome.error, delay=delay)
            await self.store.retry_later(
                self.job_id,
                claim.did,
                type(outcome.error).__name__,
                str(outcome.error),
                not_before=datetime.now(UTC) + timedelta(seconds=delay),
                worker_id=self.options.worker_id,
            )

    def _retrying(
        self, claim: Claim, identity: Identity, error: BackfillError, *, delay: float | None
    ) -> None:
        """Count and log a DID put back (``delay`` None: a rate limit, no attempt used)."""
        host = host_of(identity.pds)
        self.metrics.retry(host, type(error).__name__)
        log = logger.debug if delay is None else logger.info  # 429s: the metrics count them
        log(
            "repo.retry",
            did=claim.did,
            host=host,
            attempt=claim.attempts,
            error=f"{type(error).__name__}: {error}",
            delay=None if delay is None else round(delay, 3),
        )

    async def _finish(self, claim: Claim, result: RepoResult, started: float) -> None:
        await self._writer.add(result, superseded=claim.superseded_batch_id)
        row = result.repo
        self.metrics.repo_finished(row.status)
        self.progress.done += 1
        self.progress.records += len(result.records)
        host = host_of(row.pds) if row.pds else None
        if host is not None:
            self.progress.busiest[host] = self.progress.busiest.get(host, 0) + 1
        seconds = round(time.perf_counter() - started, 3)
        if row.status == DidState.FAILED:
            logger.warning(
                "repo.failed",
                did=row.did,
                host=host,
                attempt=claim.attempts,
                error=row.error,
                duration=seconds,
            )
        else:
            logger.debug(
                "repo.done",
                did=row.did,
                host=host,
                attempt=claim.attempts,
                status=row.status.value,
                records=len(result.records),
                bytes=row.bytes,
                duration=seconds,
            )
        self._on_progress(self.progress)

    def _failed_row(
        self, did: str, error: BackfillError, identity: Identity | None = None
    ) -> RepoResult:
        row = RepoRow(
            did=did,
            status=DidState.FAILED,
            handle=identity.handle if identity else None,
            pds=identity.pds if identity else None,
            error=f"{type(error).__name__}: {error}",
            fetched_at=datetime.now(UTC),
        )
        return RepoResult(row)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (so retries of many DIDs do not align)."""
        return random.uniform(0, self.options.retry_base_seconds * 2 ** min(attempt, 8))

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.flush_seconds)
            await self._writer.flush()

    async def _count_periodically(self) -> None:
        while True:
            await asyncio.sleep(_COUNTS_SECONDS)
            await self.report_counts()

    def summary(self) -> dict[str, Any]:
        """Figures for the end-of-job report."""
        elapsed = time.monotonic() - self.progress.started
        return {
            "elapsed_seconds": round(elapsed, 3),
            "requests": self.progress.requests,
            "rate_limited": self.progress.rate_limited,
            "records": self.progress.records,
        }
