"""ParquetSink: the default output, DESIGN.md's layout, hive-partitioned by collection.

``<path>/records/collection=<nsid>/part-<batch>.parquet`` and
``<path>/repos/part-<batch>.parquet``, zstd-compressed, row groups of at most
``ROW_GROUP_SIZE`` rows, explicit schemas below (timestamps ``timestamp[us, tz=UTC]``).

The ``collection`` column lives in the directory name only, not in the files (as Hive and
Spark write partitions). Storing it in the files too breaks pandas and
``pyarrow.parquet.read_table`` on the directory: they infer the partition column as a
dictionary and refuse to merge it with the file's string column, and storing it as a
dictionary breaks ``pyarrow.dataset(..., partitioning="hive")`` instead. Without it, DuckDB
(``hive_partitioning`` on by default), ``pyarrow.dataset(partitioning="hive")``, pandas
and polars read ``records/`` with no extra step and get one ``collection`` column (pandas
as a categorical). A single file read alone has no ``collection``: its directory names it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bsky_backfill.core.models import RecordRow, RepoRow
from bsky_backfill.sinks.durable import fsync_file
from bsky_backfill.sinks.files import FileSink
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS, RecordsFile, counts_json

__all__ = [
    "RECORDS_SCHEMA",
    "REPOS_SCHEMA",
    "ROW_GROUP_SIZE",
    "ParquetSink",
    "records_table",
    "repos_table",
    "table_kind",
    "without_dids",
    "write_parquet",
]

try:
    from bsky_backfill.sinks import _arrowcols as arrowcols
except ImportError:  # not compiled here (optional): Python and pyarrow do its work
    arrowcols = None  # type: ignore[assignment]

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
_RECORD_OPTIONAL = frozenset(
    {
        "created_at",
        "text",
        "subject_uri",
        "subject_did",
        "reply_parent_uri",
        "reply_root_uri",
        "created_at_flag",
    }
)

RECORDS_SCHEMA: Final = pa.schema(
    [
        pa.field(
            name,
            TIMESTAMP if name in ("created_at", "fetched_at") else pa.string(),
            nullable=name in _RECORD_OPTIONAL,
        )
        for name in RECORD_COLUMNS
        if name != "collection"
    ]
)
"""Columns of a records file: ``RECORD_COLUMNS`` less ``collection`` (the partition)."""

_REPO_TYPES = {"records": pa.int64(), "bytes": pa.int64(), "fetched_at": TIMESTAMP}
_REPO_REQUIRED = frozenset({"did", "status", "records", "records_by_collection", "bytes"})
REPOS_SCHEMA: Final = pa.schema(
    [
        pa.field(name, _REPO_TYPES.get(name, pa.string()), nullable=name not in _REPO_REQUIRED)
        for name in REPO_COLUMNS
    ]
)
"""Columns of a repos file; ``records_by_collection`` is JSON text."""

ROW_GROUP_SIZE: Final = 131_072
"""Rows per row group: large enough for zstd and scans, small enough to read in parallel."""

# Columns with few distinct values per file; the others (uri, cid, record ...) are unique.
_DICTIONARY = {
    "records": ["did", "rev", "commit_cid", "pds", "job_id", "created_at_flag"],
    "repos": ["pds", "status", "verified"],
}

_REPO_VALUE: dict[str, Callable[[RepoRow], Any]] = {
    "status": lambda r: r.status.value,
    "records_by_collection": lambda r: counts_json(r.records_by_collection),
}


_POSITIONS: Final = tuple(RECORD_COLUMNS.index(f.name) for f in RECORDS_SCHEMA)


def _column(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """One column as Arrow: through the C helpers where they are compiled and apply
    (timestamps: UTC datetimes or None, pyarrow calls utcoffset() on each; strings: str
    or None, copied as they are), else by pyarrow."""
    if arrowcols is not None and isinstance(values, list):
        if kind == TIMESTAMP:
            packed = arrowcols.micros(values)
            if packed is not None:
                data, bitmap, nulls = packed
                validity = pa.py_buffer(bitmap) if bitmap is not None else None
                return pa.Array.from_buffers(
                    kind, len(values), [validity, pa.py_buffer(data)], null_count=nulls
                )
        elif kind == pa.string():
            # Buffers from Arrow's memory pool, which keeps freed memory for the next
            # batch: bytes objects come and go through malloc, fresh from the OS each time.
            texts = arrowcols.strings(values, pa.allocate_buffer)
            if texts is not None:
                offsets, data, validity, nulls = texts
                return pa.Array.from_buffers(
                    kind, len(values), [validity, offsets, data], null_count=nulls
                )
    return pa.array(values, kind)


def _transposed(rows: Sequence[tuple[Any, ...]], width: int) -> Sequence[Sequence[Any]]:
    """``rows`` as columns (in C where compiled: ``zip(*rows)`` is ~0.5 us a row)."""
    if arrowcols is not None and isinstance(rows, list):
        return arrowcols.columns(rows, width)
    return list(zip(*rows, strict=True)) if rows else [()] * width


def records_table(rows: Sequence[RecordRow]) -> pa.Table:
    """Record rows as an Arrow table with ``RECORDS_SCHEMA`` (no ``collection``)."""
    columns = _transposed(rows, len(RECORD_COLUMNS))
    return pa.Table.from_arrays(
        [_column(columns[i], f.type) for i, f in zip(_POSITIONS, RECORDS_SCHEMA, strict=True)],
        schema=RECORDS_SCHEMA,
    )


def repos_table(rows: Sequence[RepoRow]) -> pa.Table:
    """Repo rows as an Arrow table with ``REPOS_SCHEMA``."""
    arrays = []
    for f in REPOS_SCHEMA:
        get = _REPO_VALUE.get(f.name, attrgetter(f.name))
        arrays.append(_column([get(r) for r in rows], f.type))
    return pa.Table.from_arrays(arrays, schema=REPOS_SCHEMA)


def _options(kind: str) -> dict[str, Any]:
    """The dataset's Parquet options for a ``kind`` ("records" or "repos") file."""
    return {"compression": "zstd", "use_dictionary": _DICTIONARY[kind]}


def write_parquet(table: pa.Table, dest: Path | IO[bytes], kind: str) -> None:
    """Write ``table`` (``kind`` records or repos) with the dataset's Parquet options."""
    pq.write_table(table, dest, row_group_size=ROW_GROUP_SIZE, **_options(kind))


def table_kind(path: str) -> str:
    """``"repos"`` for a file under a ``repos`` folder, else ``"records"``."""
    return "repos" if path.rsplit("/", 2)[-2:-1] == ["repos"] else "records"


def without_dids(table: pa.Table, dids: frozenset[str]) -> pa.Table | None:
    """``table`` less the rows of ``dids``; None when it has none of them."""
    drop = pc.is_in(table["did"], value_set=pa.array(sorted(dids), pa.string()))
    if not pc.any(drop).as_py():
        return None
    return table.filter(pc.invert(drop))


def _write(table: pa.Table, dest: Path, kind: str) -> None:
    write_parquet(table, dest, kind)
    fsync_file(dest)


class _ParquetRecords:
    """A records file written a chunk at a time (a row group or more per chunk)."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            dest, RECORDS_SCHEMA, **_options("records")
        )

    def write(self, rows: Sequence[RecordRow]) -> None:
        assert self._writer is not None, "written after close"
        self._writer.write_table(records_table(rows), row_group_size=ROW_GROUP_SIZE)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            fsync_file(self._dest)

    def abandon(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with suppress(Exception):  # the staging folder holding it is removed next
                writer.close()


class ParquetSink(FileSink):
    """Writes the dataset as Parquet files; see the module docstring for the layout."""

    format = "parquet"
    suffix = ".parquet"
    partition_prefix = "collection="

    def _open_records(self, dest: Path) -> RecordsFile:
        return _ParquetRecords(dest)

    def _write_repos(self, dest: Path, rows: Sequence[RepoRow]) -> None:
        _write(repos_table(rows), dest, "repos")

    def _rewrite_without(self, src: Path, dest: Path, dids: frozenset[str]) -> int | None:
        kept = without_dids(pq.ParquetFile(src).read(), dids)
        if kept is None:
            return None
        if kept.num_rows:
            _write(kept, dest, table_kind(src.as_posix()))
        return int(kept.num_rows)

    def _read_file_stats(self, path: Path, kind: str) -> tuple[int, Counter[str]]:
        parquet = pq.ParquetFile(path)
        if kind != "repos":
            return parquet.metadata.num_rows, Counter()
        statuses = parquet.read(columns=["status"]).column("status").to_pylist()
        return parquet.metadata.num_rows, Counter(statuses)
