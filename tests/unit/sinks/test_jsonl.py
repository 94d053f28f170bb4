"""JsonlSink: one object per line with every column, readable by DuckDB as it is."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from bsky_backfill.core.models import DidState
from bsky_backfill.sinks import JsonlSink
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS
from tests.support.sinks import COLLECTIONS, plan


def test_lines_carry_every_column_and_duckdb_reads_them(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    batch_id, results, _ = plan([("b1", [("did:plc:a", 1, 10, DidState.COMPLETE)])])[0]
    sink.stage(batch_id, results)
    sink.publish(batch_id)

    post = (tmp_path / f"records/{COLLECTIONS[0]}/part-b1.jsonl").read_text(encoding="utf-8")
    first = json.loads(post.splitlines()[0])
    assert list(first) == list(RECORD_COLUMNS)
    assert first["created_at"] == "2025-01-01T00:00:00.000000Z"
    assert "héllo ✨" in post
    repo = json.loads((tmp_path / "repos/part-b1.jsonl").read_text())
    assert list(repo) == list(REPO_COLUMNS)
    assert json.loads(repo["records_by_collection"]) == dict(
        zip(COLLECTIONS, (4, 3, 3), strict=True)
    )

    rows = duckdb.sql(
        "SELECT collection, count(*), count(created_at) "
        f"FROM read_json('{tmp_path}/records/*/*.jsonl') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [(COLLECTIONS[1], 3, 2), (COLLECTIONS[0], 4, 3), (COLLECTIONS[2], 3, 3)]
