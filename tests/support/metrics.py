"""Prometheus scrapes in tests: parsing the text format, and a real scrape of a running
``bsky-backfill run`` against the simulated network (rate-limited, so that 429s, waits
and retries show up too)."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port
from tests.support.jobs import CLI, dids_of, fakenet, job_yaml

__all__ = ["JobScrapes", "Sample", "Scrape", "parse", "scrape_of_a_running_job"]


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Scrape(dict[str, list[Sample]]):
    """Samples by sample name (``bsky_backfill_requests_total``, ``..._bucket``...)."""

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            sample.value
            for sample in self.get(name, [])
            if all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed per value of ``label``."""
        sums: dict[str, float] = defaultdict(float)
        for sample in self.get(name, []):
            sums[sample.labels[label]] += sample.value
        return dict(sums)


def parse(text: str) -> Scrape:
    """The samples of a Prometheus text exposition (raises on a malformed one)."""
    found = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(Sample(dict(sample.labels), sample.value))
    return found


@dataclass(frozen=True)
class JobScrapes:
    """Of one run: a scrape taken while the job ran with repos finished, the last scrape
    taken (the most series), and the run's stderr (its log)."""

    running: str
    last: str
    log: str


def scrape_of_a_running_job(folder: Path) -> JobScrapes:
    """Run a job (``folder/job.yaml``) against a rate-limited simulated network with its
    metrics on a free port; scrape them while it runs."""
    folder.mkdir(parents=True, exist_ok=True)
    with fakenet("--rate-limit-scale", "0.003", "--rate-window", "4") as net:
        (folder / "dids.txt").write_text("\n".join(dids_of(net)) + "\n")
        port = free_port()
        text = job_yaml(net["plc"], name="scraped", rate=20, batch=5)
        text = text.replace("{prometheus_port: 0}", f"{{prometheus_port: {port}}}")
        (folder / "job.yaml").write_text(text)
        log = folder / "run.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [*CLI, "run", "job.yaml"], cwd=folder, stdout=subprocess.DEVNULL, stderr=err
            )
            scrapes: list[str] = []
            try:
                while process.poll() is None:
                    if (found := _scrape(port)) is not None:
                        scrapes.append(found)
                    time.sleep(0.5)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        assert process.returncode == 0, log.read_text()[-3000:]
    running = [
        text
        for text in scrapes
        if parse(text).total("bsky_backfill_job_state", state="running") == 1
    ]
    assert running, "no scrape while the job ran with repos finished"
    return JobScrapes(running[0], scrapes[-1], log.read_text())


def _scrape(port: int) -> str | None:
    """The exposition, if the server answers and the job has finished repos already."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200 or "bsky_backfill_repos_total{" not in answer.text:
        return None
    return answer.text
