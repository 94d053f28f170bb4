"""Running whole jobs in tests: the simulated network as its own process, the CLI as a
child process that can be SIGKILLed, and the DIDs of that network."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bsky_backfill.fakenet.population import PopulationSpec, account_seed

__all__ = ["CLI", "dids_of", "fakenet", "fakenet_process", "job_yaml", "run_cli"]

CLI = [sys.executable, "-c", "from bsky_backfill.cli import main; main()"]

_JOB = """\
backfill:
  name: {name}
  source: {{type: file, path: dids.txt}}
  record_types: [app.bsky.feed.post, app.bsky.feed.like, app.bsky.graph.follow]
  time_range: {{start_date: "2024-03-01", end_date: "2025-09-30"}}
  identity: {{plc_url: "{plc}"}}
  network: {{allow_private_addresses: true}}
  processing: {{requests_per_second: {rate}, max_retries: 5, batch_size: {batch}{hosts}}}
  storage: {{type: parquet, path: {out}}}
  monitoring: {{prometheus_port: 0}}
"""


def job_yaml(
    plc: object,
    *,
    name: str = "it",
    rate: float = 50,
    batch: int = 20,
    out: str = "./out",
    max_hosts: int | None = None,
) -> str:
    """A job over the simulated network: DIDs from ``dids.txt``, Parquet into ``out``;
    ``max_hosts``: hosts fetched at once (the config's default when None)."""
    hosts = "" if max_hosts is None else f", max_concurrent_pds: {max_hosts}"
    return _JOB.format(name=name, plc=plc, rate=rate, batch=batch, out=out, hosts=hosts)


@contextmanager
def fakenet(*options: str) -> Iterator[dict[str, object]]:
    """``bsky-backfill fakenet`` as its own process (it outlives the job's restarts):
    3 hosts, 150 accounts, seed 5, plus ``options``; yields its announced URLs."""
    command = [*CLI, "fakenet", "--hosts", "3", "--accounts", "150", "--seed", "5", *options]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def fakenet_process() -> Iterator[dict[str, object]]:
    """The simulated network as its own process."""
    with fakenet() as urls:
        yield urls


def run_cli(
    config: Path, *, kill_after: float | None = None, env: dict[str, str] | None = None
) -> int | None:
    """Run ``bsky-backfill run`` (SIGKILL it after ``kill_after`` s); its exit code, or None
    when it was killed."""
    with (config.parent / "run.log").open("ab") as log:
        process = subprocess.Popen(
            [*CLI, "run", str(config)], cwd=config.parent, stdout=log, stderr=log, env=env
        )
        try:
            process.wait(timeout=kill_after if kill_after is not None else 300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return None
    if process.returncode != 0:
        print((config.parent / "run.log").read_text()[-3000:])
    return process.returncode


def dids_of(network: dict[str, object]) -> list[str]:
    """The DIDs of the network ``fakenet_process`` serves (its accounts, in order)."""
    world_spec = PopulationSpec(seed=5, accounts=150, hosts=3)
    urls: list[str] = network["hosts"]  # type: ignore[assignment]
    hosts = [url.removeprefix("http://").replace(":", "%3A") for url in urls]
    return [account_seed(world_spec, i, hosts).did for i in range(world_spec.total_accounts)]
