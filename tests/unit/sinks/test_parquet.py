"""ParquetSink: DESIGN.md's layout and schema, and what each reader makes of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bsky_backfill.core.models import DidState
from bsky_backfill.sinks import ParquetSink
from bsky_backfill.sinks import parquet as parquet_module
from bsky_backfill.sinks.parquet import RECORDS_SCHEMA, REPOS_SCHEMA
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS
from tests.support.sinks import COLLECTIONS, plan

BATCHES = plan(
    [
        (
            "b1",
            [
                ("did:plc:a", 1, 10, DidState.COMPLETE),
                ("did:plc:t", 1, 0, DidState.TAKENDOWN),
            ],
        )
    ]
)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    sink = ParquetSink(tmp_path / "out")
    batch_id, results, _ = BATCHES[0]
    sink.stage(batch_id, results)
    sink.publish(batch_id)
    return sink.path


def test_files_follow_the_design_layout(dataset: Path) -> None:
    files = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.parquet"))
    assert files == sorted(
        [f"records/collection={c}/part-b1.parquet" for c in COLLECTIONS] + ["repos/part-b1.parquet"]
    )


def test_files_have_the_explicit_schema_and_zstd(dataset: Path) -> None:
    records = pq.ParquetFile(dataset / f"records/collection={COLLECTIONS[0]}/part-b1.parquet")
    repos = pq.ParquetFile(dataset / "repos/part-b1.parquet")
    assert records.schema_arrow.equals(RECORDS_SCHEMA)
    assert repos.schema_arrow.equals(REPOS_SCHEMA)
    assert records.schema_arrow.field("created_at").type == pa.timestamp("us", tz="UTC")
    for f in (records, repos):
        group = f.metadata.row_group(0)
        assert {group.column(i).compression for i in range(group.num_columns)} == {"ZSTD"}


def test_row_groups_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_module, "ROW_GROUP_SIZE", 4)
    sink = ParquetSink(tmp_path)
    sink.stage("b1", plan([("b1", [("did:plc:a", 1, 30, DidState.COMPLETE)])])[0][1])
    sink.publish("b1")
    posts = pq.ParquetFile(tmp_path / f"records/collection={COLLECTIONS[0]}/part-b1.parquet")
    assert (posts.metadata.num_rows, posts.metadata.num_row_groups) == (10, 3)


def test_duckdb_reads_one_collection_column_and_utc_timestamps(dataset: Path) -> None:
    source = f"read_parquet('{dataset}/records/**/*.parquet', hive_partitioning=true)"
    types = {
        name: kind for name, kind, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()
    }
    assert sorted(types) == sorted(RECORD_COLUMNS)
    assert types["created_at"] == types["fetched_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["collection"] == "VARCHAR"
    counts = duckdb.sql(
        f"SELECT collection, count(*), count(created_at) FROM {source} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [(COLLECTIONS[1], 3, 2), (COLLECTIONS[0], 4, 3), (COLLECTIONS[2], 3, 3)]
    repos = f"read_parquet('{dataset}/repos/*.parquet')"
    repo_types = {
        name: kind for name, kind, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM {repos}").fetchall()
    }
    assert list(repo_types) == list(REPO_COLUMNS)
    assert (repo_types["records"], repo_types["fetched_at"]) == (
        "BIGINT",
        "TIMESTAMP WITH TIME ZONE",
    )
    by_collection = duckdb.sql(f"SELECT records_by_collection::JSON FROM {repos} WHERE records > 0")
    assert json.loads(by_collection.fetchall()[0][0]) == dict(
        zip(COLLECTIONS, (4, 3, 3), strict=True)
    )


def test_pyarrow_dataset_reads_the_hive_partitions(dataset: Path) -> None:
    table = ds.dataset(dataset / "records", partitioning="hive").to_table()
    assert table.schema.field("collection").type == pa.string()
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column_names) == sorted(RECORD_COLUMNS)
    assert table.num_rows == 10
    assert pq.read_table(dataset / "records").num_rows == 10
    repos = ds.dataset(dataset / "repos").to_table()
    assert repos.column_names == list(REPO_COLUMNS)
    assert sorted(repos.column("status").to_pylist()) == ["complete", "takendown"]


def test_created_at_is_null_when_absent(dataset: Path) -> None:
    table = ds.dataset(dataset / "records", partitioning="hive").to_table()
    flags = dict(zip(table["rkey"].to_pylist(), table["created_at_flag"].to_pylist(), strict=True))
    moments = dict(zip(table["rkey"].to_pylist(), table["created_at"].to_pylist(), strict=True))
    assert moments["3v1k00004"] is None
    assert flags["3v1k00004"] == "missing"
    assert moments["3v1k00001"] == datetime(2025, 1, 1, 0, 1, 0, 1, tzinfo=UTC)


def test_pandas_reads_the_directory(dataset: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(dataset / "records")
    assert sorted(frame.columns) == sorted(RECORD_COLUMNS)
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert isinstance(frame["collection"].dtype, pd.CategoricalDtype)
    assert frame["collection"].value_counts().to_dict() == {
        COLLECTIONS[0]: 4,
        COLLECTIONS[1]: 3,
        COLLECTIONS[2]: 3,
    }
    assert list(pd.read_parquet(dataset / "repos").columns) == list(REPO_COLUMNS)


def test_polars_reads_the_directory(dataset: Path) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.read_parquet(dataset / "records")
    assert sorted(frame.columns) == sorted(RECORD_COLUMNS)
    assert frame.schema["created_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["collection"] == pl.String
    globbed = pl.read_parquet(f"{dataset}/records/**/*.parquet", hive_partitioning=True)
    assert globbed.height == 10
    assert "collection" in globbed.columns
