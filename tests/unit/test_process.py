"""Process-wide settings: the entry point's garbage collector thresholds and GIL switch
interval."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from bsky_backfill.process import GC_THRESHOLDS, SWITCH_INTERVAL, tune_process


def test_tuning_sets_the_thresholds_and_the_interval_and_can_be_undone() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        tune_process()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    finally:
        gc.set_threshold(*before)
        sys.setswitchinterval(interval)


def test_the_cli_tunes_the_process_before_running_a_command() -> None:
    probe = (
        "import gc, sys\n"
        "from bsky_backfill import cli\n"
        "cli.app = lambda: print(gc.get_threshold(), round(sys.getswitchinterval(), 6))\n"
        "cli.main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{GC_THRESHOLDS} {SWITCH_INTERVAL}"
