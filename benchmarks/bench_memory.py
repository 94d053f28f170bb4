"""Peak memory: the RSS of a process running a real job, against DESIGN.md's targets.

Usage: python -m benchmarks.bench_memory [--quick] [--only dids huge] [--out FILE]

Each job runs in a child process of its own (``--child``: ``run_job`` as ``bsky-backfill
run`` does), so its peak RSS (``VmHWM``) is the job's alone; it also samples its RSS every
0.1 s for a timeline. The simulated network runs in yet another process
(``benchmarks.fakenet_runner``) with rate limits far above what the engine can use.

- ``dids``: 100,000 DIDs with small repos (0-20 records) on 20 hosts (target <= 300 MB).
  ``--quick`` runs 10,000: 100k takes ~10 minutes here.
- ``huge``: 200 small accounts plus one of 3,000,000 records (a ~1 GB CAR, built by
  fakenet before the clock starts, ~2 minutes and ~8 GB in fakenet's process), target
  <= 500 MB. Bodies over 16 MB are spooled to disk and read from the file. Two jobs on the
  same network: every record kept (``all``), and one rare collection (``rare``:
  ``app.bsky.graph.block``, 2 % of records). ``--quick`` uses 300,000 records (~100 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_e2e import COLLECTIONS, CONFIG, END, START, UNLIMITED
from benchmarks.bench_scheduler import REPO, Network
from benchmarks.machine import RESULTS, load, log, machine

MB = 1024 * 1024
PAGE = 4096
SAMPLE_S = 0.1


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    accounts: int
    hosts: int
    target_mb: int
    huge: tuple[int, ...] = ()
    jobs: tuple[tuple[str, tuple[str, ...]], ...] = (("all", tuple(COLLECTIONS)),)
    warm: bool = False  # small repos: built on demand; a huge one: before the clock


@dataclass
class JobMemory:
    scenario: str
    job: str
    dids: int
    records: int
    largest_repo_mb: float
    peak_rss_mb: float
    target_mb: int
    met: bool
    wall_s: float
    cpu_s: float
    load_after: str
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (s, RSS MB)


def scenarios(quick: bool) -> list[Scenario]:
    many = 10_000 if quick else 100_000
    huge = 300_000 if quick else 3_000_000
    rare = ("rare", ("app.bsky.graph.block",))
    return [
        Scenario("dids", f"{many:,} DIDs, 0-20 records each", many, 20, 300),
        Scenario(
            "huge",
            f"200 small repos + one of {huge:,} records",
            200,
            4,
            500,
            huge=(huge,),
            jobs=(("all", tuple(COLLECTIONS)), rare),
            warm=True,
        ),
    ]


def runner_spec(scenario: Scenario) -> dict[str, Any]:
    return {
        "seed": 3,
        "accounts": scenario.accounts,
        "hosts": scenario.hosts,
        "max_records": 20,
        "size_scale": 4.0,
        "population": {"web_share": 0.0, "huge": list(scenario.huge)},
        "host_specs": [UNLIMITED] * scenario.hosts,
        "warm": scenario.warm,
        "cache_bytes": 4 * 1024**3,
    }


# -- the child: one job, its own peak RSS ---------------------------------------------------


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / MB


def peak_rss_mb() -> float:
    """``VmHWM``: this process's RSS high-water mark. Not ``ru_maxrss``: Linux carries
    that over from the parent across fork + exec, so a child of a big parent reads big."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def sample(timeline: list[tuple[float, float]], stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(SAMPLE_S):
        timeline.append((round(time.monotonic() - started, 2), round(rss_mb(), 1)))


def child(config_path: Path, result_path: Path) -> None:
    """Run the job; write peak RSS (``VmHWM``), records, wall and CPU."""
    from bsky_backfill.config import load_config
    from bsky_backfill.core.job import run_job
    from bsky_backfill.observability.logs import configure_logging
    from bsky_backfill.process import tune_process

    config = load_config(config_path)
    configure_logging(config.monitoring.log_level, stream=open("/dev/null", "w"))  # noqa: SIM115
    tune_process()  # as `bsky-backfill run` does
    timeline: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(timeline, stop), daemon=True)
    sampler.start()
    started = time.monotonic()
    outcome = asyncio.run(run_job(config, config_path.read_text()))
    wall = time.monotonic() - started
    stop.set()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "records": outcome.records,
        "dids": sum(outcome.counts.values()),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "timeline": timeline,
    }
    result_path.write_text(json.dumps(result))


# -- the parent -----------------------------------------------------------------------------


def job_config(
    network: Network, folder: Path, scenario: Scenario, job: str, keep: tuple[str, ...]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dids = folder / "dids.txt"
    dids.write_text("\n".join(did for did, _, _ in network.accounts) + "\n")
    path = folder / "job.yaml"
    path.write_text(
        CONFIG.format(
            name=f"bench_memory_{job}",
            dids=dids,
            collections=json.dumps(list(keep)),
            start=START,
            end=END,
            plc=network.plc,
            hosts=scenario.hosts,
            out=folder / "out",
        )
    )
    return path


def run_child(config_path: Path) -> dict[str, Any]:
    result_path = config_path.with_name("memory.json")
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(config_path)]
    subprocess.run([*command, "--result", str(result_path)], check=True, cwd=REPO)
    answer: dict[str, Any] = json.loads(result_path.read_text())
    return answer


def largest_repo_mb(config_path: Path) -> float:
    import pyarrow.parquet as pq

    repos = pq.read_table(config_path.parent / "out" / "repos", columns=["bytes"])
    sizes = [b for b in repos.column("bytes").to_pylist() if b is not None]
    return round(max(sizes, default=0) / MB, 1)


def run(scenario: Scenario) -> list[JobMemory]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        log(f"memory {scenario.name}: starting fakenet ({scenario.title}) ...")
        network = Network(runner_spec(scenario), folder)
        try:
            for job, keep in scenario.jobs:
                config_path = job_config(network, folder / job, scenario, job, keep)
                log(f"memory {scenario.name}/{job}: running the job in a child process ...")
                got = run_child(config_path)
                memory = JobMemory(
                    scenario=scenario.name,
                    job=job,
                    dids=got["dids"],
                    records=got["records"],
                    largest_repo_mb=largest_repo_mb(config_path),
                    peak_rss_mb=got["peak_rss_mb"],
                    target_mb=scenario.target_mb,
                    met=got["peak_rss_mb"] <= scenario.target_mb,
                    wall_s=got["wall_s"],
                    cpu_s=got["cpu_s"],
                    load_after=load(),
                    timeline=got["timeline"],
                )
                log(f"  peak RSS {memory.peak_rss_mb} MB (target {memory.target_mb} MB)")
                results.append(memory)
        finally:
            network.close()
    return results


def table(results: list[JobMemory]) -> str:
    lines = [
        "| job | DIDs | records kept | largest repo MB | peak RSS MB | target MB | met | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario}/{r.job} | {r.dids:,} | {r.records:,} | {r.largest_repo_mb:.1f} "
            f"| **{r.peak_rss_mb:.0f}** | {r.target_mb} | {'yes' if r.met else 'no'} "
            f"| {r.wall_s:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k DIDs, a ~100 MB repo")
    parser.add_argument("--only", nargs="*", help="scenarios: dids huge (default: both)")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.result)
        return 0
    mode = "quick" if args.quick else "full"
    meta = machine()
    results = [
        memory
        for scenario in scenarios(args.quick)
        if not args.only or scenario.name in args.only
        for memory in run(scenario)
    ]
    out = args.out or RESULTS / f"memory_{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"mode": mode, "machine": meta, "results": [asdict(r) for r in results]}
    out.write_text(json.dumps(payload, indent=2))
    print(table(results))
    log(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
