"""``/metrics``: the server's jobs in the Prometheus text format.

Built per scrape from the jobs' status into a fresh registry (no process-wide metric
state): jobs by state, and per job the DIDs by state, records kept and repos per second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from bsky_backfill.api.jobs import JobStatus
from bsky_backfill.state.model import JobState

__all__ = ["render_metrics"]


def render_metrics(statuses: Sequence[JobStatus]) -> str:
    """The exposition text for ``statuses``."""
    registry = CollectorRegistry()
    jobs = Gauge("bsky_backfill_jobs", "Jobs by state", ["state"], registry=registry)
    by_state = Counter(status.state for status in statuses)
    for state in JobState:
        jobs.labels(state.value).set(by_state[state])
    dids = Gauge(
        "bsky_backfill_job_dids", "DIDs by state, per job", ["job_id", "state"], registry=registry
    )
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
        for did_state, n in status.counts.items():
            dids.labels(status.job_id, did_state).set(n)
        records.labels(status.job_id).set(status.records)
        if status.rate_per_second is not None:
            rate.labels(status.job_id).set(status.rate_per_second)
    return generate_latest(registry).decode()
