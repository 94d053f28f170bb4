"""Scheduler efficiency: a real job's wall time against the hosts' rate-limit bound.

Usage: python -m benchmarks.bench_scheduler [--quick] [--only NAME ...] [--out results.json]

Each scenario starts the simulated network in ANOTHER process
(``benchmarks.fakenet_runner``: its CPU does not share the engine's event loop; every
repo export is built before the clock starts), then runs a real job in this process
(``run_job``: YAML config, SQLite state, Parquet output in a temp dir) over every account
of the network, and reads fakenet's request log afterwards.

Hosts have scaled-down limits: one bucket of ``L_h`` getRepo calls per ``W`` = 10 s
(fixed windows per client, as the reference PDS counts them). ``L_h`` is chosen so each
host's own time ``n_h / (L_h / W)`` is the target ``T`` — every host is on the critical
path, so every host's ramp-up and tail counts — except that no host gets less than 40
per window (4/s): hosts that small finish early. The config's ``requests_per_second`` is
far above every host's rate, so the hosts' headers govern.

The bound = max over hosts of (getRepo calls the host must answer / (L_h / W)): no client
within the limits finishes sooner (give or take the first window: a fixed-window host
lets a client spend a whole window's quota at once, so ``fixed-window floor`` =
max over hosts of ``(ceil(n_h / L_h) - 1) * W`` is reported too).

Scenarios: ``a`` 10 hosts, ``b`` 40 hosts, ``c`` = b with host 0 lying about its limit
(advertises 2x), ``d`` = b with one critical host answering after 0.5 s (a host whose rate
needs 2-4 requests in flight). Reported: wall time, bound, ratio, requests, 429s, the
most requests any host got in one of its windows (and its limit), CPU seconds of the engine
process and of fakenet's, and where the time went (start-up, identity resolution, the
fetch phase, the tail after the last request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bsky_backfill
from bsky_backfill.config import load_config
from bsky_backfill.core.job import run_job
from bsky_backfill.fakenet.population import PopulationSpec, account_seed
from bsky_backfill.observability.logs import configure_logging
from bsky_backfill.process import tune_process

REPO = Path(__file__).resolve().parent.parent
GET_REPO = "com.atproto.sync.getRepo"
WINDOW_S = 10.0
FLOOR_LIMIT = 40  # per window: 4 requests/s
SLOW_LATENCY_S = 0.5
CLIENT_RATE = 1000  # config requests_per_second: far above any host's, headers govern

CONFIG = """\
backfill:
  name: bench_scheduler
  source: {{type: file, path: {dids}}}
  record_types: [app.bsky.feed.post, app.bsky.feed.like, app.bsky.graph.follow]
  time_range: {{start_date: "2000-01-01", end_date: "2100-01-01"}}
  identity: {{plc_url: "{plc}"}}
  network: {{allow_private_addresses: true}}
  processing:
    requests_per_second: {rate}
    max_concurrent_pds: {concurrent}
    batch_size: 100
  storage: {{type: parquet, path: {out}}}
  monitoring: {{prometheus_port: 0}}
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    hosts: int
    accounts: int
    target_s: float
    seed: int = 1
    lying_host: int | None = None
    slow: bool = False
    max_concurrent_pds: int | None = None  # None: one per host


@dataclass
class HostFigures:
    host: int
    dids: int
    limit: int
    rate: float
    ideal_s: float
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    first_s: float | None = None
    last_s: float | None = None
    max_per_window: int = 0
    max_sliding_window: int = 0
    used_share: float = 0.0  # ok requests / (limit x windows the host was busy)
    latency_s: float = 0.0
    advertise_factor: float = 1.0
    per_second: list[int] = field(default_factory=list)  # getRepo calls in each second


@dataclass
class Result:
    scenario: str
    title: str
    hosts: int
    dids: int
    wall_s: float
    bound_s: float
    fixed_window_floor_s: float
    ratio: float
    requests: int
    rate_limited: int
    worst_window: str
    engine_cpu_s: float
    fakenet_cpu_s: float
    phases: dict[str, float]
    per_host: list[HostFigures] = field(default_factory=list)
    critical_host: int = 0
    plc_requests: int = 0
    engine: dict[str, Any] = field(default_factory=dict)


def scenarios(quick: bool) -> list[Scenario]:
    big = (40, 4_000, 60.0) if quick else (40, 20_000, 300.0)
    small = (10, 1_000, 30.0) if quick else (10, 2_000, 60.0)
    return [
        Scenario("a", f"{small[0]} hosts / {small[1]:,} DIDs", *small),
        Scenario("b", f"{big[0]} hosts / {big[1]:,} DIDs", *big),
        Scenario("c", "b + host 0 lies (advertises 2x)", *big, lying_host=0),
        Scenario("d", f"b + one host {SLOW_LATENCY_S} s slow", *big, slow=True),
    ]


# -- the network ----------------------------------------------------------------------------


def population(scenario: Scenario) -> list[tuple[str, int, str]]:
    """(did, host, status) of every account, as the runner will generate them (did:web
    names depend on ports not known yet, but hosts and statuses do not)."""
    spec = PopulationSpec(
        seed=scenario.seed, accounts=scenario.accounts, hosts=scenario.hosts, **REPO_SHAPE
    )
    names = [f"placeholder{h}" for h in range(scenario.hosts)]
    seeds = (account_seed(spec, i, names) for i in range(spec.total_accounts))
    return [(s.did, s.host, s.status) for s in seeds]


REPO_SHAPE: dict[str, Any] = {"max_records": 20, "size_scale": 4.0}


def host_plan(scenario: Scenario) -> tuple[list[HostFigures], dict[str, Any]]:
    """Each host's limit (and faults) and the runner spec that serves them."""
    # Tombstoned DIDs stop at the PLC directory; every other one costs its host one call.
    calls = Counter(host for _, host, status in population(scenario) if status != "tombstoned")
    figures = []
    for host in range(scenario.hosts):
        n = calls.get(host, 0)
        limit = max(math.ceil(n * WINDOW_S / scenario.target_s), FLOOR_LIMIT)
        rate = limit / WINDOW_S
        figures.append(HostFigures(host, n, limit, rate, n / rate))
    if scenario.lying_host is not None:
        figures[scenario.lying_host].advertise_factor = 2.0
    if scenario.slow:
        # A critical host whose rate needs 2-4 requests in flight at this latency.
        slow = next(
            f
            for f in figures
            if f.limit > FLOOR_LIMIT and 2 <= f.rate * SLOW_LATENCY_S <= 4 and f.host > 0
        )
        slow.latency_s = SLOW_LATENCY_S
    specs = [
        {
            "global_limit": f.limit,
            "global_window_s": WINDOW_S,
            "getrepo_limit": f.limit,
            "getrepo_window_s": WINDOW_S,
            "advertise_factor": f.advertise_factor,
        }
        for f in figures
    ]
    runner = {
        "seed": scenario.seed,
        "accounts": scenario.accounts,
        "hosts": scenario.hosts,
        **REPO_SHAPE,
        "host_specs": specs,
        "latency_s": {str(f.host): f.latency_s for f in figures if f.latency_s},
        "warm": True,
    }
    return figures, runner


class Network:
    """``benchmarks.fakenet_runner`` in a child process."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        spec = {**spec, "dids_out": str(folder / "accounts.tsv")}
        (folder / "network.json").write_text(json.dumps(spec))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fakenet_runner", str(folder / "network.json")],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("fakenet_runner exited before it was ready")
        ready = json.loads(line)
        self.plc: str = ready["plc"]
        self.hosts: list[str] = ready["hosts"]
        self.accounts = [
            line.split("\t") for line in (folder / "accounts.tsv").read_text().splitlines()
        ]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.plc}/_fakenet/log", timeout=120) as answer:
            entries: list[dict[str, Any]] = json.loads(answer.read())["entries"]
        return entries

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- one run --------------------------------------------------------------------------------


def engine_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def profiled(out: Path | None) -> Iterator[None]:
    """Run the block under pyinstrument when ``out`` is given (its report goes there)."""
    if out is None:
        yield
        return
    from pyinstrument import Profiler  # a dev dependency: only needed with --profile

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(profiler.output_text(unicode=False, color=False))


def run(scenario: Scenario, folder: Path, profile: Path | None = None) -> Result:
    figures, spec = host_plan(scenario)
    network = Network(spec, folder)
    try:
        dids_file = folder / "dids.txt"
        dids_file.write_text("\n".join(did for did, _, _ in network.accounts) + "\n")
        config_path = folder / "job.yaml"
        config_path.write_text(
            CONFIG.format(
                dids=dids_file,
                plc=network.plc,
                rate=CLIENT_RATE,
                concurrent=scenario.max_concurrent_pds or scenario.hosts,
                out=folder / "out",
            )
        )
        config = load_config(config_path)
        configure_logging(config.monitoring.log_level)  # as `bsky-backfill run` does
        tune_process()
        fakenet_cpu = network.cpu_seconds()
        cpu = engine_cpu()
        started = time.monotonic()
        with profiled(profile):
            outcome = asyncio.run(run_job(config, config_path.read_text()))
        ended = time.monotonic()
        cpu = engine_cpu() - cpu
        fakenet_cpu = network.cpu_seconds() - fakenet_cpu
        entries = network.log()
    finally:
        network.close()
    engine = {"counts": outcome.counts, **outcome.figures}
    return analyse(scenario, figures, entries, started, ended, cpu, fakenet_cpu, engine)


def analyse(
    scenario: Scenario,
    figures: list[HostFigures],
    entries: list[dict[str, Any]],
    started: float,
    ended: float,
    cpu: float,
    fakenet_cpu: float,
    engine: dict[str, Any],
) -> Result:
    by_host: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        if entry["host"] is not None and entry["endpoint"] == GET_REPO:
            by_host[entry["host"]].append(entry)
    plc = sorted(e["monotonic"] for e in entries if e["host"] is None)
    for f in figures:
        log = sorted(by_host[f.host], key=lambda e: e["wall"])
        f.requests = len(log)
        f.ok = sum(1 for e in log if e["status"] != 429)
        f.rate_limited = f.requests - f.ok
        if not log:
            continue
        f.first_s = min(e["monotonic"] for e in log) - started
        f.last_s = max(e["monotonic"] for e in log) - started
        f.max_per_window, windows = server_windows([e["wall"] for e in log])
        f.max_sliding_window = sliding_max([e["wall"] for e in log], WINDOW_S)
        f.used_share = f.ok / (f.limit * windows)
        seconds = Counter(int(e["monotonic"] - started) for e in log)
        f.per_second = [seconds.get(i, 0) for i in range(int(ended - started) + 1)]
    bound = max(f.ideal_s for f in figures)
    floor = max((math.ceil(f.dids / f.limit) - 1) * WINDOW_S for f in figures)
    critical = max(figures, key=lambda f: f.last_s or 0)  # the host that finished last
    first_get = min(f.first_s for f in figures if f.first_s is not None)
    last_get = max(f.last_s for f in figures if f.last_s is not None)
    wall = ended - started
    phases = {
        "to_first_plc_request": (plc[0] - started) if plc else 0.0,
        "identity_resolution": (plc[-1] - plc[0]) if plc else 0.0,
        "to_first_getrepo": first_get,
        "fetch_phase": last_get - first_get,
        "after_last_getrepo": wall - last_get,
    }
    worst = max(figures, key=lambda f: f.max_per_window / f.limit)
    return Result(
        scenario.name,
        scenario.title,
        scenario.hosts,
        sum(engine["counts"].values()),
        round(wall, 2),
        round(bound, 2),
        floor,
        round(wall / bound, 3),
        sum(f.requests for f in figures),
        sum(f.rate_limited for f in figures),
        f"{worst.max_per_window}/{worst.limit} (host {worst.host})",
        round(cpu, 2),
        round(fakenet_cpu, 2),
        {k: round(v, 2) for k, v in phases.items()},
        figures,
        critical.host,
        len(plc),
        engine,
    )


def server_windows(walls: list[float]) -> tuple[int, int]:
    """The host's own fixed windows (one opens at the first request after the last ended):
    the most requests one window counted, and how many windows there were."""
    ends_at, count, most, windows = -math.inf, 0, 0, 0
    for wall in walls:
        if wall >= ends_at:
            ends_at, count, windows = wall + WINDOW_S, 0, windows + 1
        count += 1
        most = max(most, count)
    return most, windows


def sliding_max(walls: list[float], width: float) -> int:
    """The most requests inside any ``width``-second interval."""
    most, start = 0, 0
    for end, wall in enumerate(walls):
        while walls[start] <= wall - width:
            start += 1
        most = max(most, end - start + 1)
    return most


# -- report ---------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | DIDs | wall s | bound s | ratio | fixed-window floor s | requests | 429s "
        "| most in one host window | engine CPU s | fakenet CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario}: {r.title} | {r.dids:,} | {r.wall_s:.1f} | {r.bound_s:.1f} "
            f"| **{r.ratio:.2f}** | {r.fixed_window_floor_s:.0f} | {r.requests:,} "
            f"| {r.rate_limited} | {r.worst_window} | {r.engine_cpu_s:.1f} "
            f"| {r.fakenet_cpu_s:.1f} |"
        )
    lines += [
        "",
        "| scenario | start-up | identity resolution | to first getRepo | fetch phase "
        "| after last getRepo | last host to finish: its span vs its own bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        p = r.phases
        c = r.per_host[r.critical_host]
        span = (c.last_s or 0) - (c.first_s or 0)
        lines.append(
            f"| {r.scenario} | {p['to_first_plc_request']:.1f} | {p['identity_resolution']:.1f} "
            f"| {p['to_first_getrepo']:.1f} | {p['fetch_phase']:.1f} "
            f"| {p['after_last_getrepo']:.1f} | host {c.host}: {span:.1f} s for "
            f"{c.ideal_s:.1f} s ({span / c.ideal_s:.2f}x), {c.rate_limited} x 429 |"
        )
    return "\n".join(lines)


def host_table(result: Result, limit: int = 12) -> str:
    lines = [
        f"scenario {result.scenario}: per host (busiest {limit})",
        "| host | DIDs | limit/10 s | own bound s | first s | last s | span/own | 429 "
        "| max in window | max sliding | quota used |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in sorted(result.per_host, key=lambda f: -f.dids)[:limit]:
        span = (f.last_s or 0) - (f.first_s or 0)
        extra = " (lies)" if f.advertise_factor != 1 else ""
        extra += f" ({f.latency_s} s slow)" if f.latency_s else ""
        lines.append(
            f"| {f.host}{extra} | {f.dids} | {f.limit} | {f.ideal_s:.1f} | {f.first_s or 0:.1f} "
            f"| {f.last_s or 0:.1f} | {span / f.ideal_s:.2f} | {f.rate_limited} "
            f"| {f.max_per_window} | {f.max_sliding_window} | {f.used_share:.0%} |"
        )
    return "\n".join(lines)


def plot(result: Result, path: Path) -> None:
    """requests/s over the job: every host together, and the hosts that decide the wall
    time (the four with the most DIDs), each with its limit as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    total = [sum(column) for column in zip(*(f.per_second for f in result.per_host), strict=True)]
    top.plot(total, color="black", linewidth=1)
    top.set_ylabel("getRepo/s, all hosts")
    top.set_title(
        f"{result.scenario}: {result.title} — wall {result.wall_s:.0f} s, "
        f"bound {result.bound_s:.0f} s ({result.ratio:.2f}x)"
    )
    for f in sorted(result.per_host, key=lambda f: -f.dids)[:4]:
        (line,) = bottom.plot(f.per_second, linewidth=1, label=f"host {f.host}")
        bottom.axhline(f.rate, color=line.get_color(), linestyle="--", linewidth=0.8)
    bottom.axvline(result.bound_s, color="grey", linestyle=":", linewidth=1)
    bottom.set_xlabel("seconds since the job started")
    bottom.set_ylabel("getRepo/s (dashed: limit)")
    bottom.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def git_commit() -> str | None:
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return described.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller jobs (a few minutes)")
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/)")
    parser.add_argument("--hosts-table", action="store_true", help="print per-host figures")
    parser.add_argument("--plot", action="store_true", help="PNG of requests/s per scenario")
    parser.add_argument("--profile", type=Path, help="pyinstrument report per scenario here")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    commit = git_commit()  # before the runs: the code imported now is the code measured
    out = args.out or Path(__file__).parent / "results" / f"scheduler_{mode}.json"
    chosen = [s for s in scenarios(args.quick) if not args.only or s.name in args.only]
    results = []
    for scenario in chosen:
        with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as folder:
            print(f"scenario {scenario.name}: {scenario.title} ...", file=sys.stderr, flush=True)
            report = args.profile / f"{mode}_{scenario.name}.txt" if args.profile else None
            result = run(scenario, Path(folder), report)
            print(
                f"  wall {result.wall_s:.1f} s, bound {result.bound_s:.1f} s, "
                f"ratio {result.ratio:.2f}, phases {result.phases}",
                file=sys.stderr,
                flush=True,
            )
            results.append(result)
            if args.plot:
                plot(result, out.with_name(f"{out.stem}_{scenario.name}.png"))
    print(table(results))
    if args.hosts_table:
        for result in results:
            print()
            print(host_table(result))
    engine = Path(bsky_backfill.__file__).resolve().parent
    meta = {
        "mode": mode,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "window_s": WINDOW_S,
        "floor_limit": FLOOR_LIMIT,
        "client_rate": CLIENT_RATE,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "engine": str(engine),
        "commit": commit if engine.is_relative_to(REPO) else os.environ.get("ENGINE_COMMIT"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
