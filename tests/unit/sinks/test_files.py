"""FileSink specifics: a publish cut off after any rename, and an incomplete staging."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bsky_backfill.core.models import DidState
from bsky_backfill.sinks import JsonlSink, ParquetSink, SinkWriteFailed
from bsky_backfill.sinks.files import FileSink
from tests.support.sinks import expected, plan, visible

DONE = DidState.COMPLETE
BATCHES = plan(
    [
        ("b1", [("did:plc:a", 1, 7, DONE), ("did:plc:b", 1, 5, DONE)]),
        ("b2", [("did:plc:a", 2, 4, DONE), ("did:plc:c", 1, 3, DONE)]),
    ]
)
RENAMES = 4 + 4  # b2's four new files, then b1's four rewritten ones


@pytest.mark.parametrize("sink_type", [ParquetSink, JsonlSink])
@pytest.mark.parametrize("cut", range(RENAMES))
def test_a_publish_cut_off_after_any_rename_is_finished_by_the_next(
    sink_type: type[FileSink], cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_type(tmp_path)
    for batch_id, results, supersedes in BATCHES:
        sink.stage(batch_id, results, supersedes)
    sink.publish("b1")
    replace, done = os.replace, []

    def failing_replace(src: str, dest: str) -> None:
        if len(done) == cut:
            raise OSError(errno.EIO, "I/O error", dest)
        replace(src, dest)
        done.append(dest)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SinkWriteFailed):
        sink.publish("b2")
    monkeypatch.setattr(os, "replace", replace)
    assert sink.staged_batches() == {"b2"}
    sink.publish("b2")
    assert visible(sink.format, tmp_path) == expected(BATCHES)
    assert sink.staged_batches() == set()


def test_an_incomplete_staging_is_listed_refused_and_discardable(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    (tmp_path / "_staging" / "b1.tmp" / "data").mkdir(parents=True)
    assert sink.staged_batches() == {"b1"}
    with pytest.raises(ValueError, match="not completely staged"):
        sink.publish("b1")
    sink.discard("b1")
    assert sink.staged_batches() == set()
