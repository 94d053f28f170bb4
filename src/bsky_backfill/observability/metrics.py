"""A job's Prometheus metrics: one :class:`JobMetrics` per job run, in a registry of its
own (no process-wide metric state), every series labelled with the job's id.

Events are counted as they happen (requests, repos, retries, batches); per-host pacing
figures (429s, waits, pace, quota left) are read from the host limiters at scrape time,
so the hot path pays nothing for them. Host labels are bounded (:mod:`.hosts`).

The metric names are a contract: ``deploy/prometheus/alerts.yml`` and
``deploy/grafana/backfill.json`` use them, and a test checks them against a real scrape.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bsky_backfill.observability.hosts import HostLabels
from bsky_backfill.state.model import JobState

__all__ = ["DEFAULT_HOST_LABELS", "HostFigures", "JobMetrics", "JobsMetrics", "exposition"]

DEFAULT_HOST_LABELS: Final = 50
_PREFIX: Final = "bsky_backfill_"
_REQUEST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600)
_FLUSH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


class HostFigures(Protocol):
    """What a host limiter knows about its host (``core.limits.HostLimiter``)."""

    rate_limited_count: int
    paused_seconds: float
    waits: int
    waited_seconds: float

    @property
    def rate(self) -> float: ...

    @property
    def quota_remaining(self) -> int | None: ...


class JobMetrics:
    """The metrics of one job run; see the module docstring."""

    def __init__(self, job_id: str, *, host_labels: int = DEFAULT_HOST_LABELS) -> None:
        self.job_id = job_id
        self.hosts = HostLabels(host_labels)
        self.registry = CollectorRegistry(auto_describe=True)
        self._limiters: Callable[[], Mapping[str, HostFigures]] = dict
        self._build()
        self.registry.register(_LimiterCollector(self))

    def _build(self) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(_PREFIX + name, doc, ["job_id", *labels], registry=self.registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(_PREFIX + name, doc, ["job_id", *labels], registry=self.registry)

        self._requests = counter(
            "requests", "HTTP requests by host, endpoint and status", "host", "endpoint", "status"
        )
        self._latency = Histogram(
            _PREFIX + "request_duration_seconds",
            "HTTP request time, body included",
            ["job_id", "host", "endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._bytes = counter("downloaded_bytes", "Response body bytes received", "host")
        self._in_flight = gauge("requests_in_flight", "Requests under way", "host")
        self._repos = counter("repos", "Repos finished, by final status", "status")
        self._records = counter("records_written", "Records written, by collection", "collection")
        self._retries = counter("retries", "DIDs put back for a retry", "host", "reason")
        self._queue = gauge("queue_depth", "Work waiting inside the process", "queue")
        self._dids = gauge("dids", "The job's DIDs by state (all workers)", "state")
        self._state = gauge("job_state", "1 for the job's current state", "state")
        self._started = gauge("job_started_timestamp_seconds", "When this run started")
        self._progress = gauge(
            "job_last_progress_timestamp_seconds", "When this run last finished a repo"
        )
        self._flush = Histogram(
            _PREFIX + "sink_flush_duration_seconds",
            "Time to write one batch (stage, commit and publish)",
            ["job_id"],
            buckets=_FLUSH_BUCKETS,
            registry=self.registry,
        )
        now = time.time()
        self._started.labels(self.job_id).set(now)
        self._progress.labels(self.job_id).set(now)

    # --- events ------------------------------------------------------------------------

    def request_started(self, host: str | None) -> None:
        self._in_flight.labels(self.job_id, self.hosts.label(host)).inc()

    def request_finished(
        self, host: str | None, endpoint: str, status: str, seconds: float, size: int
    ) -> None:
        """One request's end: ``status`` is the HTTP status, or the error's class name
        when no answer came (a timeout, a refused connection)."""
        label = self.hosts.label(host)
        self._in_flight.labels(self.job_id, label).dec()
        self._requests.labels(self.job_id, label, endpoint, status).inc()
        self._latency.labels(self.job_id, label, endpoint).observe(seconds)
        if size:
            self._bytes.labels(self.job_id, label).inc(size)

    def repo_finished(self, status: str) -> None:
        self._repos.labels(self.job_id, status).inc()
        self._progress.labels(self.job_id).set(time.time())

    def retry(self, host: str | None, reason: str) -> None:
        self._retries.labels(self.job_id, self.hosts.label(host), reason).inc()

    def batch_written(self, seconds: float, records_by_collection: Mapping[str, int]) -> None:
        self._flush.labels(self.job_id).observe(seconds)
        for collection, count in records_by_collection.items():
            self._records.labels(self.job_id, collection).inc(count)

    def queue_depth(self, queue: str, depth: int) -> None:
        self._queue.labels(self.job_id, queue).set(depth)

    def dids(self, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self._dids.labels(self.job_id, state).set(count)

    def job_state(self, state: JobState) -> None:
        for known in JobState:
            self._state.labels(self.job_id, known.value).set(1 if known == state else 0)

    def watch_limiters(self, limiters: Callable[[], Mapping[str, HostFigures]]) -> None:
        """Where the per-host pacing figures are read from at each scrape."""
        self._limiters = limiters

    def limiter_figures(self) -> Mapping[str, HostFigures]:
        return self._limiters()


@dataclass(frozen=True, slots=True)
class _Figure:
    """One per-host figure read from the limiters."""

    name: str
    counter: bool
    doc: str
    read: Callable[[HostFigures], float | None]


_LIMITER_FIGURES: Final = (
    _Figure("rate_limited", True, "429 answers", lambda f: f.rate_limited_count),
    _Figure(
        "rate_limit_pause_seconds",
        True,
        "Seconds the host was paused (429s, spent quota)",
        lambda f: f.paused_seconds,
    ),
    _Figure("rate_limit_waits", True, "Requests that waited for their turn", lambda f: f.waits),
    _Figure(
        "rate_limit_wait_seconds",
        True,
        "Seconds requests waited for their turn (pace and pauses)",
        lambda f: f.waited_seconds,
    ),
    _Figure("host_rate", False, "The pace now, requests per second", lambda f: f.rate),
    _Figure(
        "host_quota_remaining",
        False,
        "Requests the host's last RateLimit-Remaining left",
        lambda f: f.quota_remaining,
    ),
)


class _LimiterCollector(Collector):
    """The limiters' figures at scrape time, summed per host label."""

    def __init__(self, metrics: JobMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        figures = dict(self._metrics.limiter_figures())
        for figure_of in _LIMITER_FIGURES:
            kind = CounterMetricFamily if figure_of.counter else GaugeMetricFamily
            family = kind(_PREFIX + figure_of.name, figure_of.doc, labels=["job_id", "host"])
            sums: dict[str, float] = defaultdict(float)
            for host, figure in figures.items():
                value = figure_of.read(figure)
                if value is not None:
                    sums[self._metrics.hosts.label(host)] += value
            for label, value in sorted(sums.items()):
                family.add_metric([self._metrics.job_id, label], value)
            yield family


def exposition(registries: Iterable[CollectorRegistry]) -> bytes:
    """The Prometheus text of several registries whose metrics share names (one job's
    each): every family once, with the samples of all."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Fixed(_merged(registries)))
    return generate_latest(combined)


def _merged(registries: Iterable[CollectorRegistry]) -> list[Metric]:
    merged: dict[str, Metric] = {}
    for registry in registries:
        for family in registry.collect():
            known = merged.get(family.name)
            if known is None:
                known = merged[family.name] = Metric(family.name, family.documentation, family.type)
            known.samples.extend(family.samples)
    return list(merged.values())


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class JobsMetrics:
    """The metrics of every job one process works for (a Celery worker's tasks), one
    :class:`JobMetrics` per job id that all of its tasks add to; :attr:`registry` serves
    them together. Thread-safe (a worker's ``threads`` pool)."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobMetrics] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Merged(self))

    def for_job(self, job_id: str, host_labels: int = DEFAULT_HOST_LABELS) -> JobMetrics:
        with self._lock:
            metrics = self._jobs.get(job_id)
            if metrics is None:
                metrics = self._jobs[job_id] = JobMetrics(job_id, host_labels=host_labels)
            return metrics

    def registries(self) -> list[CollectorRegistry]:
        with self._lock:
            return [metrics.registry for metrics in self._jobs.values()]


class _Merged(Collector):
    def __init__(self, jobs: JobsMetrics) -> None:
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        return iter(_merged(self._jobs.registries()))
