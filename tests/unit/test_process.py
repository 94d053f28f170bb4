"""Process-wide settings: the entry point's garbage collector thresholds."""

from __future__ import annotations

import gc
import subprocess
import sys

from bsky_backfill.process import GC_THRESHOLDS, tune_garbage_collector


def test_tuning_sets_the_thresholds_and_can_be_undone() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_the_cli_tunes_the_collector_before_running_a_command() -> None:
    probe = (
        "import gc, sys\n"
        "from bsky_backfill import cli\n"
        "cli.app = lambda: print(gc.get_threshold())\n"
        "cli.main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(GC_THRESHOLDS)
