"""Every benchmark in one command, a summary JSON and the plots BENCHMARKS.md shows.

Usage: python -m benchmarks.run [--quick] [--with-scheduler] [--only reader spooled e2e ...]
                                [--publish | --no-publish]

``--quick`` (a few minutes): reader quick, a spooled repo of 20k records, e2e + baseline
quick (300 accounts), memory quick (10k DIDs, a ~100 MB repo). Full: the same at full
size (60k records, 100k DIDs, a ~1 GB repo; ~30 minutes). The scheduler benchmark (rate
limits; 6-25 minutes) runs only with ``--with-scheduler``.

Writes ``benchmarks/results/summary.json`` (and ``summary_<mode>.json``),
``results/e2e.png`` (bsky-backfill vs the atproto-SDK baseline) and ``results/memory.png``
(peak RSS vs targets); ``--publish``
(the default for a full run) copies the PNGs to ``benchmarks/plots/`` (committed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import bench_e2e, bench_memory, bench_reader, bench_scheduler, bench_spooled
from benchmarks.machine import RESULTS, log, machine

PLOTS = Path(__file__).resolve().parent / "plots"
STEPS = ("reader", "spooled", "e2e", "memory", "scheduler")


def run_step(name: str, main: Callable[[list[str]], int], args: list[str], out: Path) -> Any:
    log(f"== {name}: {' '.join(args)}")
    main([*args, "--out", str(out)])
    return json.loads(out.read_text())


def e2e_plot(e2e: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine, base = e2e["engine"], e2e.get("baseline")
    names = ["bsky-backfill"] + (["atproto SDK\nbaseline"] if base else [])
    wall = [engine["records_per_s"]] + ([base["records_per_s"]] if base else [])
    core = [engine["records_per_s_per_core"]] + ([base["records_per_s_per_core"]] if base else [])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [w / 1000 for w in wall], color=["tab:blue", "tab:grey"][: len(names)])
    left.set_ylabel("k records/s (wall)")
    left.set_title("throughput, end to end to Parquet")
    right.bar(names, [c / 1000 for c in core], color=["tab:blue", "tab:grey"][: len(names)])
    right.axhline(engine["target_per_core"] / 1000, color="red", linestyle="--", label="target")
    right.set_ylabel("k records/s per core of CPU")
    right.set_title("CPU efficiency")
    right.legend(loc="upper right")
    pop = e2e["population"]
    figure.suptitle(
        f"{e2e['mode']}: {engine['repos']} repos, {engine['records_kept']:,} records "
        f"({pop['hosts']} hosts, fakenet in another process)",
        fontsize="medium",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def memory_plot(memory: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = memory["results"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['scenario']}/{r['job']}\n{r['dids']:,} DIDs" for r in results]
    colors = ["tab:green" if r["met"] else "tab:red" for r in results]
    left.bar(labels, [r["peak_rss_mb"] for r in results], color=colors)
    for i, r in enumerate(results):
        left.hlines(r["target_mb"], i - 0.4, i + 0.4, color="black", linestyle="--")
    left.set_ylabel("peak RSS, MB (dashed: target)")
    left.set_title(f"{memory['mode']}: peak RSS of the job's process")
    for r in results:
        times, rss = zip(*r["timeline"], strict=True) if r["timeline"] else ((), ())
        right.plot(times, rss, linewidth=1, label=f"{r['scenario']}/{r['job']}")
    right.set_xlabel("seconds since the job started")
    right.set_ylabel("RSS, MB")
    right.set_title("RSS over the job")
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes in all")
    parser.add_argument("--with-scheduler", action="store_true", help="also the scheduler")
    parser.add_argument("--only", nargs="*", choices=STEPS, help="these steps only")
    parser.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    steps = set(args.only or STEPS[:4]) | ({"scheduler"} if args.with_scheduler else set())
    flag = ["--quick"] if args.quick else []
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"mode": mode, "machine": machine()}
    if "reader" in steps:
        out = RESULTS / f"reader_{mode}.json"
        summary["reader"] = run_step("reader", bench_reader.main, flag, out)
    if "spooled" in steps:
        out = RESULTS / f"spooled_{mode}.json"
        summary["spooled"] = run_step("spooled", bench_spooled.main, flag, out)
    if "e2e" in steps:
        out = RESULTS / f"e2e_{mode}.json"
        summary["e2e"] = run_step("e2e + baseline", bench_e2e.main, [*flag, "--baseline"], out)
        e2e_plot(summary["e2e"], RESULTS / "e2e.png")
    if "memory" in steps:
        out = RESULTS / f"memory_{mode}.json"
        summary["memory"] = run_step("memory", bench_memory.main, flag, out)
        memory_plot(summary["memory"], RESULTS / "memory.png")
    if "scheduler" in steps:
        out = RESULTS / f"scheduler_{mode}.json"
        summary["scheduler"] = run_step("scheduler", bench_scheduler.main, flag, out)
    text = json.dumps(summary, indent=2)
    (RESULTS / "summary.json").write_text(text)
    (RESULTS / f"summary_{mode}.json").write_text(text)  # the last run of each mode
    publish = args.publish if args.publish is not None else not args.quick
    if publish:
        PLOTS.mkdir(exist_ok=True)
        for name in ("e2e.png", "memory.png"):
            if (RESULTS / name).is_file():
                shutil.copy2(RESULTS / name, PLOTS / name)
    log(f"summary: {RESULTS / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
