"""Summarise a py-spy raw (collapsed) profile: share of busy samples per function.

Usage: python -m benchmarks.profile_summary PROFILE.raw [--top N]

py-spy counts some threads blocked in a C-level wait as active (aiosqlite's worker in
``SimpleQueue.get``, the thread pool's ``work_queue.get``, the selector, the benchmark
waiting for fakenet): those samples are dropped, as are imports. Shares are of the
remaining (busy) samples. Made with::

    py-spy record -r 250 -f raw -o e2e.raw -- python -m benchmarks.bench_e2e --quick
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = (
    "_connection_worker_thread (aiosqlite/core.py:59)",
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py:81)",  # work_queue.get (Python 3.11)
    "Network.__init__",
    "Network.close",
    "TemporaryDirectory",
    "_find_and_load",
)
FRAME = re.compile(r"(.*) \((.*?):(\d+)\)")


def short(frame: str, line: bool = False) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    name, path, number = match.groups()
    path = path.split("site-packages/")[-1].split("/src/")[-1]
    return f"{name} ({path}:{number})" if line else f"{name} ({path})"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        frames = stack.split(";")
        with_lines = [short(f, line=True) for f in frames]
        if any(marker in f for f in with_lines for marker in IDLE):
            continue
        n = int(count)
        busy += n
        names = [short(f) for f in frames]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    return busy, own, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    busy, own, inclusive = summarise(args.profile)
    print(f"busy samples: {busy}")
    print("\nself:")
    for name, n in own.most_common(args.top):
        print(f"{n / busy:6.1%}  {name}")
    print("\ninclusive:")
    for name, n in inclusive.most_common(args.top * 2):
        print(f"{n / busy:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
