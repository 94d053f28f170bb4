"""Observability end to end: a job under faults scraped, its figures against its own
summary and dataset; a running ``bsky-backfill run`` serving /metrics and logging JSON
lines; one alert per failing job at a webhook on loopback; no secret in any log."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from bsky_backfill.config import load_config
from bsky_backfill.core.job import job_metrics, run_job
from bsky_backfill.fakenet.faults import FaultSpec
from bsky_backfill.fakenet.injector import FaultInjector
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import NetworkSpec
from bsky_backfill.observability.metrics import exposition
from tests.support.jobs import CLI, job_yaml
from tests.support.metrics import parse, scrape_of_a_running_job
from tests.support.webhook import Webhook, webhook_receiver


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    async with webhook_receiver() as hook:
        yield hook


def with_webhook(text: str, url: str) -> str:
    return text.replace(
        "monitoring: {prometheus_port: 0}",
        f"monitoring: {{prometheus_port: 0, alert_webhook_url: '{url}'}}",
    )


async def test_the_scrape_of_a_job_under_faults_agrees_with_its_summary_and_dataset(
    tmp_path: Path, webhook: Webhook
) -> None:
    spec = NetworkSpec(PopulationSpec(seed=11, accounts=120, hosts=4, deleted=0.03))
    faults = FaultSpec(seed=3, rates={"error_5xx": 0.06, "reset": 0.03, "truncate": 0.03})
    async with FakeNetwork(spec) as net:
        active = [a for a in net.world if a.status == "active" and a.seed.record_count > 10]
        net.faults = FaultInjector(faults, account_faults={active[0].did: "corrupt"})
        (tmp_path / "dids.txt").write_text("\n".join(a.did for a in net.world) + "\nbad\n")
        (tmp_path / "job.yaml").write_text(with_webhook(job_yaml(net.plc_url), webhook.url))
        config = load_config(tmp_path / "job.yaml")
        metrics = job_metrics(config)
        outcome = await run_job(config, "", metrics=metrics)
        injected = dict(net.faults.injected)
    scrape = parse(exposition([metrics.registry]).decode())

    assert scrape.by("bsky_backfill_repos_total", "status") == {
        state: float(n) for state, n in outcome.counts.items()
    }
    dids = scrape.by("bsky_backfill_dids", "state")
    assert {state: n for state, n in dids.items() if n} == {
        state: float(n) for state, n in outcome.counts.items()
    }
    records = ds.dataset(Path(outcome.output) / "records", format="parquet", partitioning="hive")
    assert scrape.total("bsky_backfill_records_written_total") == records.count_rows()
    assert outcome.records == records.count_rows()
    statuses = scrape.by("bsky_backfill_requests_total", "status")
    assert sum(n for status, n in statuses.items() if status.startswith("5")) == injected.get(
        "error_5xx", 0
    )
    assert injected.get("error_5xx", 0) > 0
    requests = scrape.total("bsky_backfill_requests_total")
    assert scrape.total("bsky_backfill_request_duration_seconds_count") == requests
    assert scrape.total("bsky_backfill_requests_total", endpoint="did_document") >= len(
        outcome.counts
    )
    retried = scrape.by("bsky_backfill_retries_total", "reason")
    assert retried.get("HostUnavailable", 0) + retried.get("TruncatedRepo", 0) > 0, retried
    repos = ds.dataset(Path(outcome.output) / "repos", format="parquet").to_table()
    assert scrape.total("bsky_backfill_downloaded_bytes_total") >= sum(
        b or 0 for b in repos["bytes"].to_pylist()
    )
    assert scrape.total("bsky_backfill_job_state", state="completed") == 1
    assert scrape.total("bsky_backfill_requests_in_flight") == 0

    assert outcome.failed >= 1  # the corrupt repo
    [message] = webhook.messages  # exactly one alert
    assert f"finished with {outcome.failed} failed DIDs" in str(message["text"])


@pytest.mark.timeout(300)
def test_a_running_job_serves_its_metrics_and_logs_json_lines_with_its_fields(
    tmp_path: Path,
) -> None:
    scrapes = scrape_of_a_running_job(tmp_path)
    scrape, log = parse(scrapes.running), scrapes.log
    assert scrape.total("bsky_backfill_job_state", job_id="scraped", state="running") == 1
    assert scrape.total("bsky_backfill_repos_total") > 0
    scrape = parse(scrapes.last)
    assert scrape.total("bsky_backfill_rate_limited_total") > 0  # the network is tight
    assert scrape.total("bsky_backfill_requests_total", status="429") > 0
    assert scrape.total("bsky_backfill_rate_limit_wait_seconds_total") > 0

    events = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    names = [event["event"] for event in events]
    assert {"job.started", "job.planned", "job.finished"} <= set(names)
    for event in events[names.index("job.started") :]:
        assert event["job_id"] == "scraped", event
        assert {"level", "timestamp", "logger"} <= set(event)
    finished = events[names.index("job.finished")]
    assert sum(finished["counts"].values()) == 150


async def test_a_job_that_fails_alerts_once_and_logs_no_secret_even_at_debug(
    tmp_path: Path, webhook: Webhook
) -> None:
    (tmp_path / "blocked").write_text("a file where the dataset folder should be")
    (tmp_path / "dids.txt").write_text("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n")
    text = job_yaml("https://plc.invalid", out=str(tmp_path / "blocked" / "out"))
    monitoring = "{prometheus_port: 0, log_level: debug, alert_webhook_url: '${HOOK_URL}'}"
    text = text.replace("{prometheus_port: 0}", monitoring)
    (tmp_path / "job.yaml").write_text(text)
    child = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "job.yaml",
        cwd=tmp_path,
        env=os.environ | {"HOOK_URL": webhook.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=120)
    log = (out + err).decode()
    assert child.returncode == 1, log
    assert log.splitlines()[-1].startswith("error: SinkWriteFailed: cannot write the dataset")
    [message] = webhook.messages
    assert str(message["text"]).startswith("bsky-backfill job it: failed")
    assert "SinkWriteFailed" in str(message["text"])
    assert "s3cretpath" not in log
