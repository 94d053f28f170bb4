"""What metrics and logs cost the engine, per event, on this machine's CPU.

Usage: python -m benchmarks.bench_observability [--events 200000]

Measures (one process, one thread, best of 3 runs): a request counted
(``request_started`` + ``request_finished``: counter, histogram, in-flight gauge), a
repo finished, a batch written (10 collections), a debug event filtered out at INFO (the
per-repo ``repo.done``), an info event rendered as a JSON line (to /dev/null), and a
scrape of a job with 50 labelled hosts. A repo costs the engine about 4 ms of CPU
(BENCHMARKS.md, scheduler scenario b: 81.7 s for 20,000 DIDs), so per-repo overhead is
also given as a share of that.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import structlog

from bsky_backfill.core.limits import HostLimiter
from bsky_backfill.observability.logs import configure_logging
from bsky_backfill.observability.metrics import JobMetrics, exposition

_REPO_CPU_SECONDS = 81.7 / 20_000


def _best(events: int, work: Callable[[int], None]) -> float:
    """Seconds per event, best of 3."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        work(events)
        times.append((time.perf_counter() - started) / events)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    metrics = JobMetrics("bench")
    hosts = [f"pds{i}.example" for i in range(60)]
    collections = {f"app.bsky.c{i}": 3 for i in range(10)}

    def requests(n: int) -> None:
        for i in range(n):
            host = hosts[i % 60]
            metrics.request_started(host)
            metrics.request_finished(host, "com.atproto.sync.getRepo", "200", 0.2, 40_000)

    def repos(n: int) -> None:
        for _ in range(n):
            metrics.repo_finished("complete")

    def batches(n: int) -> None:
        for _ in range(n):
            metrics.batch_written(0.01, collections)

    configure_logging("INFO", json=True, stream=io.StringIO())
    logger = structlog.get_logger("bench")

    def filtered(n: int) -> None:
        for i in range(n):
            logger.debug("repo.done", did="did:plc:x", host="pds", attempt=1, records=i)

    sink = open("/dev/null", "w")  # noqa: SIM115 - open for the whole measurement
    configure_logging("INFO", json=True, stream=sink)

    def emitted(n: int) -> None:
        for i in range(n):
            logger.info("repo.retry", did="did:plc:x", host="pds", attempt=i, delay=0.5)

    limiters = {host: HostLimiter() for host in hosts}
    metrics.watch_limiters(lambda: limiters)

    def scrapes(n: int) -> None:
        for _ in range(n):
            exposition([metrics.registry])

    figures = {
        "request counted": _best(args.events, requests),
        "repo finished": _best(args.events, repos),
        "batch written (10 collections)": _best(args.events // 10, batches),
        "debug event filtered out": _best(args.events, filtered),
        "info event as a JSON line": _best(args.events // 10, emitted),
        "scrape, 60 hosts (50 named)": _best(20, scrapes),
    }
    sink.close()
    for name, seconds in figures.items():
        print(f"{name:34s} {seconds * 1e6:10.1f} us")
    per_repo = (
        figures["request counted"] * 2  # a DID document and a getRepo
        + figures["repo finished"]
        + figures["debug event filtered out"]
        + figures["batch written (10 collections)"] / 100  # one batch per 100 repos
    )
    share = per_repo / _REPO_CPU_SECONDS
    print(f"per repo: {per_repo * 1e6:.1f} us = {share:.2%} of the engine's ~4 ms per repo")


if __name__ == "__main__":
    main()
