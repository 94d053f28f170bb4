"""What a figure was measured on: cores, Python, CPU model, load, date (shared helpers)."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    """The 1, 5 and 15-minute load averages (the machine is shared with test runs)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": load(),
    }


def process_cpu() -> float:
    """CPU seconds of this process (every thread), not of its children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def minor_faults() -> int:
    """Page faults of this process served without I/O: mostly fresh memory the kernel
    zeroed, a cost of handing memory back to the OS and taking it again."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def save(out: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` with the machine's facts as JSON to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **figures}, indent=2) + "\n")
