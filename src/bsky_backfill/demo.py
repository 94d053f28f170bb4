"""``bsky-backfill demo``: a real job against the simulated network, checked exactly.

Starts fakenet in-process (a few hundred accounts on several hosts, with transient 5xx,
resets and truncated downloads, one forged repo and one DID document pointing at the
cloud metadata address), writes a config and a DID list, runs the same engine as
``bsky-backfill run``, then compares the dataset with the network's ground truth.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
from rich.progress import Progress as Bar

from bsky_backfill.config import load_config
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.job import JobOutcome, run_job
from bsky_backfill.core.manager import Progress
from bsky_backfill.fakenet.faults import FaultSpec
from bsky_backfill.fakenet.injector import FaultInjector
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import NetworkSpec
from bsky_backfill.fakenet.truth import ExpectedRepo, expected_repos

__all__ = ["DEMO_MARKER", "compare_with_truth", "run_demo", "run_with_progress", "truth_for"]

DEMO_MARKER = ".bsky-backfill-demo"
_CONFIG = """\
backfill:
  name: demo
  source: {{type: file, path: dids.txt}}
  record_types:
    [app.bsky.feed.post, app.bsky.feed.like, app.bsky.feed.repost, app.bsky.graph.follow]
  time_range: {{start_date: "2024-01-01"}}
  identity: {{plc_url: "{plc}"}}
  network: {{allow_private_addresses: true}}   # the simulated network lives on loopback
  processing: {{requests_per_second: 40, max_retries: 4}}
  storage: {{type: parquet, path: ./dataset}}
  monitoring: {{prometheus_port: 0}}
"""


def compare_with_truth(dataset: Path, truth: dict[str, ExpectedRepo]) -> list[str]:
    """Every way the dataset at ``dataset`` differs from ``truth`` (empty: exact)."""
    import pyarrow.dataset as ds  # here: `run` imports this module, and ds costs ~50 MB

    records = ds.dataset(dataset / "records", format="parquet", partitioning="hive")
    got: dict[str, dict[tuple[str, str], str]] = {}
    for row in records.to_table(columns=["did", "collection", "rkey", "cid"]).to_pylist():
        key = (row["collection"], row["rkey"])
        if key in got.setdefault(row["did"], {}):
            return [f"duplicate row {row['did']} {key}"]
        got[row["did"]][key] = row["cid"]
    repos = ds.dataset(dataset / "repos", format="parquet").to_table(columns=["did", "status"])
    statuses = dict(zip(repos["did"].to_pylist(), repos["status"].to_pylist(), strict=True))
    problems = []
    for did, expected in truth.items():
        if statuses.get(did) != expected.status:
            problems.append(f"{did}: status {statuses.get(did)}, expected {expected.status}")
        if got.get(did, {}) != expected.records:
            problems.append(
                f"{did}: {len(got.get(did, {}))} records, expected {len(expected.records)}"
            )
    problems += [f"{did}: not in the job" for did in set(statuses) - set(truth)]
    return problems


def truth_for(net: FakeNetwork, dids: list[str], config: BackfillConfig) -> dict[str, ExpectedRepo]:
    """The network's ground truth for a job of ``config`` over ``dids``, fetched now."""
    faults = net.faults
    return expected_repos(
        net.world,
        dids,
        collections=config.record_types,
        start=config.time_range.start_date,
        end=config.time_range.end_date,
        fetched_at=datetime.now(UTC),
        failing=faults.failing_dids() if isinstance(faults, FaultInjector) else (),
    )


def _fresh(out: Path) -> None:
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise FileExistsError(f"{out} exists and is not a demo folder: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by bsky-backfill demo; safe to delete\n")


async def run_demo(console: Console, *, out: Path, accounts: int, hosts: int, seed: int) -> bool:
    """Run the demo into ``out`` (replacing an earlier demo there); True if exact."""
    _fresh(out)
    spec = NetworkSpec(PopulationSpec(seed=seed, accounts=accounts, hosts=hosts))
    faults = FaultSpec(seed=seed, rates={"error_5xx": 0.03, "reset": 0.01, "truncate": 0.02})
    async with FakeNetwork(spec) as net:
        active = [a.did for a in net.world if a.status == "active" and a.seed.record_count > 5]
        net.faults = FaultInjector(
            faults,
            account_faults={active[0]: "bad_signature"},
            endpoints={active[1]: "http://169.254.169.254"},
        )
        dids = [a.did for a in net.world] + ["did:plc:neverregistered2345abcde", "not-a-did"]
        (out / "dids.txt").write_text("\n".join(dids) + "\n")
        text = _CONFIG.format(plc=net.plc_url)
        (out / "demo.yaml").write_text(text)
        config = load_config(out / "demo.yaml")
        console.print(
            f"simulated network: {len(net.world)} accounts on {hosts} hosts "
            f"(PLC {net.plc_url}); faults on"
        )
        outcome = await run_with_progress(console, config, text, len(dids))
        truth = truth_for(net, dids, config)
        injected = dict(net.faults.injected)
    _report(console, outcome, injected)
    dataset = Path(outcome.output)
    problems = compare_with_truth(dataset, truth)
    if problems:
        console.print(f"[red]{len(problems)} differences from ground truth[/red]")
        for line in problems[:10]:
            console.print(f"  {line}")
        return False
    console.print("[green]exact: every record and every status matches the ground truth[/green]")
    glob = dataset / "records" / "**" / "*.parquet"
    console.print(
        'query it: duckdb -c "SELECT collection, count(*) FROM read_parquet('
        f"'{glob}', hive_partitioning=true) GROUP BY 1\""
    )
    return True


async def run_with_progress(
    console: Console,
    config: BackfillConfig,
    text: str,
    total: int,
    *,
    start: Callable[[Callable[[Progress], None]], Awaitable[JobOutcome]] | None = None,
) -> JobOutcome:
    """``run_job`` (or ``start(on_progress)``) with a live progress bar: repos done of
    ``total``, records, ETA."""
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Bar("{task.description}", *columns, console=console, transient=True) as bar:
        task = bar.add_task("repos", total=total)

        def update(progress: Progress) -> None:
            elapsed = max(time.monotonic() - progress.started, 1e-6)
            busiest = sorted(progress.busiest.items(), key=lambda item: -item[1])[:3]
            hosts = ", ".join(f"{host} {n}" for host, n in busiest)
            described = (
                f"repos, {progress.records:,} records, {progress.requests / elapsed:,.0f} req/s"
                f" ({progress.rate_limited} rate-limited); busiest: {hosts or '-'}"
            )
            bar.update(
                task,
                total=progress.total or total or None,
                completed=progress.done,
                description=described,
            )

        if start is not None:
            return await start(update)
        return await run_job(config, text, on_progress=update)


def _report(console: Console, outcome: JobOutcome, injected: dict[str, int]) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(outcome.counts.items()))
    figures = outcome.figures
    console.print(
        f"done in {figures.get('elapsed_seconds', 0):.1f} s: {counts}; "
        f"{outcome.records:,} records; {figures.get('requests', 0)} requests, "
        f"{figures.get('rate_limited', 0)} rate-limited"
    )
    console.print(f"faults injected: {injected or 'none'}; dataset: {outcome.output}")
