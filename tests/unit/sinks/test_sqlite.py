"""SqliteSink: one database file; the views show published rows only, in every column."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from bsky_backfill.core.models import DidState
from bsky_backfill.sinks import SqliteSink
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS
from tests.support.sinks import plan


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_views_show_published_rows_and_the_tables_hold_staged_ones(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path)
    batches = plan(
        [
            ("b1", [("did:plc:a", 1, 5, DidState.COMPLETE)]),
            ("b2", [("did:plc:b", 1, 3, DidState.COMPLETE)]),
        ]
    )
    for batch_id, results, _ in batches:
        sink.stage(batch_id, results)
    sink.publish("b1")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.sqlite"]
    with closing(sqlite3.connect(tmp_path / "dataset.sqlite")) as db:
        assert columns(db, "records_v") == list(RECORD_COLUMNS)
        assert columns(db, "repos_v") == list(REPO_COLUMNS)
        assert columns(db, "records")[-2:] == ["batch_id", "published"]
        assert db.execute("SELECT count(*) FROM records_v").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM records").fetchone() == (8,)
        assert db.execute("SELECT batch_id, published FROM batches ORDER BY 1").fetchall() == [
            ("b1", 1),
            ("b2", 0),
        ]
        assert db.execute("SELECT typeof(records), typeof(bytes) FROM repos_v").fetchone() == (
            "integer",
            "integer",
        )
