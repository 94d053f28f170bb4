"""Process-wide settings that an entry point (the CLI, a benchmark) applies once at start.

The library never changes them itself: a program embedding it keeps its own.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

__all__ = ["GC_THRESHOLDS", "SWITCH_INTERVAL", "tune_process"]

GC_THRESHOLDS: Final = (20_000, 10, 10)
"""Python 3.11's default (700, 10, 10) runs a young collection every 700 container
allocations and an older one every 10 of those; a backfill allocates millions of
short-lived, acyclic containers (decoded records, rows), freed by reference counting, so
those collections walk large heaps and find nothing. Only the young threshold is raised,
and only so far: cyclic garbage (asyncio and aiohttp make some per request) waits for
up to that many allocations, and at 100,000 a 100k-DID job peaked ~20 MB higher
(320 vs 299 MB); 20,000 is as fast (``benchmarks/bench_pipeline.py``: ~15 us per record
read + rows + Parquet, 19 with the default) for a few MB. See BENCHMARKS.md."""

SWITCH_INTERVAL: Final = 0.02
"""Seconds a thread holds the GIL before another that waits for it gets its turn
(Python's default: 0.005). A job runs the event loop, the repo reader, the sink and
SQLite's thread; at 5 ms the reader is interrupted ~200 times a second and each hand-off
costs CPU: end to end 89-123k records/s per core at 5 ms, 122-123k at 20 ms
(``benchmarks/bench_e2e.py --quick``, interleaved runs). The event loop then waits up
to 20 ms for its turn: nothing in a job is that time-critical (rate limits pace
requests per second or minute)."""


def tune_process() -> None:
    """Collect cyclic garbage less often (``GC_THRESHOLDS``; memory is unaffected in
    practice, the engine's garbage is freed by reference counting) and switch threads
    less often (``SWITCH_INTERVAL``)."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
