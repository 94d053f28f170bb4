"""Process-wide settings that an entry point (the CLI, a benchmark) applies once at start.

The library never changes them itself: a program embedding it keeps its own.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GC_THRESHOLDS", "tune_garbage_collector"]

GC_THRESHOLDS: Final = (100_000, 50, 100)
"""Python 3.11's default (700, 10, 10) runs a young collection every 700 container
allocations, and each full one walks every live object; a backfill allocates millions of
short-lived, acyclic containers (decoded records, rows), freed by reference counting, so
those collections find nothing. Measured (benchmarks/, BENCHMARKS.md): read + rows +
Parquet of 100k records 18.5 -> 14.6 us per record."""


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often (see ``GC_THRESHOLDS``); memory is unaffected in
    practice because the engine's garbage is freed by reference counting."""
    gc.set_threshold(*GC_THRESHOLDS)
