from __future__ import annotations

from collections.abc import Mapping

from bsky_backfill.core.limits import HostLimiter
from bsky_backfill.observability.hosts import OTHER
from bsky_backfill.observability.metrics import HostFigures, JobMetrics, exposition
from bsky_backfill.state.model import JobState
from tests.support.metrics import parse


def scrape(*metrics: JobMetrics) -> dict:
    return parse(exposition(m.registry for m in metrics).decode())


def test_a_request_counts_its_status_latency_bytes_and_leaves_nothing_in_flight() -> None:
    metrics = JobMetrics("j")
    metrics.request_started("pds.example")
    metrics.request_finished("pds.example", "com.atproto.sync.getRepo", "200", 0.3, 2048)
    metrics.request_started("pds.example")
    metrics.request_finished("pds.example", "com.atproto.sync.getRepo", "timeout", 10.0, 0)
    found = scrape(metrics)
    assert found.by("bsky_backfill_requests_total", "status") == {"200": 1, "timeout": 1}
    assert found.total("bsky_backfill_request_duration_seconds_count") == 2
    assert found.total("bsky_backfill_request_duration_seconds_bucket", le="0.5") == 1
    assert found.total("bsky_backfill_downloaded_bytes_total", host="pds.example") == 2048
    assert found.total("bsky_backfill_requests_in_flight") == 0


def test_every_series_carries_the_job_id() -> None:
    metrics = JobMetrics("study-7")
    metrics.repo_finished("complete")
    metrics.batch_written(0.02, {"app.bsky.feed.post": 3})
    metrics.job_state(JobState.RUNNING)
    for samples in scrape(metrics).values():
        assert all(sample.labels["job_id"] == "study-7" for sample in samples)


def test_records_written_and_repos_are_counted_by_collection_and_status() -> None:
    metrics = JobMetrics("j")
    metrics.batch_written(0.01, {"app.bsky.feed.post": 3, "app.bsky.feed.like": 1})
    metrics.batch_written(0.01, {"app.bsky.feed.post": 2})
    for status in ("complete", "complete", "takendown"):
        metrics.repo_finished(status)
    found = scrape(metrics)
    assert found.by("bsky_backfill_records_written_total", "collection") == {
        "app.bsky.feed.post": 5,
        "app.bsky.feed.like": 1,
    }
    assert found.by("bsky_backfill_repos_total", "status") == {"complete": 2, "takendown": 1}
    assert found.total("bsky_backfill_sink_flush_duration_seconds_count") == 2


def test_the_job_state_is_one_for_the_current_state_only() -> None:
    metrics = JobMetrics("j")
    metrics.job_state(JobState.RUNNING)
    metrics.job_state(JobState.FAILED)
    states = scrape(metrics).by("bsky_backfill_job_state", "state")
    assert states == {state.value: (1 if state is JobState.FAILED else 0) for state in JobState}


def test_limiter_figures_are_read_at_scrape_time_and_summed_past_the_host_limit() -> None:
    metrics = JobMetrics("j", host_labels=1)
    limiters: dict[str, HostLimiter] = {"a": HostLimiter(), "b": HostLimiter(), "c": HostLimiter()}
    for host, limiter in limiters.items():
        limiter.rate_limited_count = {"a": 1, "b": 2, "c": 4}[host]
    source: Mapping[str, HostFigures] = limiters
    metrics.watch_limiters(lambda: source)
    assert scrape(metrics).by("bsky_backfill_rate_limited_total", "host") == {"a": 1, OTHER: 6}
    limiters["a"].rate_limited_count = 10
    assert scrape(metrics).total("bsky_backfill_rate_limited_total", host="a") == 10


def test_a_host_without_quota_headers_has_no_quota_sample() -> None:
    metrics = JobMetrics("j")
    metrics.watch_limiters(lambda: {"a": HostLimiter()})
    assert "bsky_backfill_host_quota_remaining" not in scrape(metrics)


def test_several_jobs_share_one_exposition_with_each_family_once() -> None:
    first, second = JobMetrics("one"), JobMetrics("two")
    first.repo_finished("complete")
    second.repo_finished("failed")
    text = exposition([first.registry, second.registry]).decode()
    assert text.count("# TYPE bsky_backfill_repos_total counter") == 1
    found = parse(text)
    assert found.total("bsky_backfill_repos_total", job_id="one", status="complete") == 1
    assert found.total("bsky_backfill_repos_total", job_id="two", status="failed") == 1
