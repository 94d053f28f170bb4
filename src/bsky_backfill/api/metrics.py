"""``/metrics``: the server's jobs in the Prometheus text format, built per scrape.

The server's own figures (jobs by state; per job its records and rate) come from the
jobs' status; each job this server ran adds its run's metrics (``JobMetrics``: requests,
repos, hosts...). A job it did not run (one started before a restart) shows its DIDs by
state and its state from its status, under the same names as a live run's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge

from bsky_backfill.api.jobs import JobStatus
from bsky_backfill.observability.metrics import JobMetrics, exposition
from bsky_backfill.state.model import JobState

__all__ = ["render_metrics"]


def render_metrics(statuses: Sequence[JobStatus], live: Mapping[str, JobMetrics]) -> str:
    """The exposition text for ``statuses`` and the ``live`` runs' metrics (by job id)."""
    registry = CollectorRegistry()
    jobs = Gauge("bsky_backfill_jobs", "Jobs by state", ["state"], registry=registry)
    by_state = Counter(status.state for status in statuses)
    for state in JobState:
        jobs.labels(state.value).set(by_state[state])
    records = Gauge(
        "bsky_backfill_job_records", "Records kept, per job", ["job_id"], registry=registry
    )
    rate = Gauge(
        "bsky_backfill_job_repos_per_second",
        "Repos finished per second in the current run, per running job",
        ["job_id"],
        registry=registry,
    )
    for status in statuses:
        records.labels(status.job_id).set(status.records)
        if status.rate_per_second is not None:
            rate.labels(status.job_id).set(status.rate_per_second)
    dids = Gauge(
        "bsky_backfill_dids", "The job's DIDs by state", ["job_id", "state"], registry=registry
    )
    job_state = Gauge(
        "bsky_backfill_job_state", "1 for the job's state", ["job_id", "state"], registry=registry
    )
    for status in statuses:
        if status.job_id in live:
            continue  # its run reports these itself
        for did_state, n in status.counts.items():
            dids.labels(status.job_id, did_state).set(n)
        for state in JobState:
            job_state.labels(status.job_id, state.value).set(1 if state == status.state else 0)
    return exposition([registry, *(metrics.registry for metrics in live.values())]).decode()
