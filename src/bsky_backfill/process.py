"""Process-wide settings that an entry point (the CLI, a benchmark) applies once at start.

The library never changes them itself: a program embedding it keeps its own.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GC_THRESHOLDS", "tune_garbage_collector"]

GC_THRESHOLDS: Final = (20_000, 10, 10)
"""Python 3.11's default (700, 10, 10) runs a young collection every 700 container
allocations and an older one every 10 of those; a backfill allocates millions of
short-lived, acyclic containers (decoded records, rows), freed by reference counting, so
those collections walk large heaps and find nothing. Only the young threshold is raised,
and only so far: cyclic garbage (asyncio and aiohttp make some per request) waits for
up to that many allocations, and at 100,000 a 100k-DID job peaked ~20 MB higher
(320 vs 299 MB); 20,000 is as fast (``benchmarks/bench_pipeline.py``: ~15 us per record
read + rows + Parquet, 19 with the default) for a few MB. See BENCHMARKS.md."""


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often (see ``GC_THRESHOLDS``); memory is unaffected in
    practice because the engine's garbage is freed by reference counting."""
    gc.set_threshold(*GC_THRESHOLDS)
