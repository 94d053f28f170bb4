"""JsonlSink: the dataset as JSON Lines, one object per row, UTF-8.

``<path>/records/<nsid>/part-<batch>.jsonl`` and ``<path>/repos/part-<batch>.jsonl``.
Each line has every column of ``rows.RECORD_COLUMNS`` / ``rows.REPO_COLUMNS`` (nulls
included), with the text forms of ``rows``: timestamps as RFC 3339 strings, ``record`` and
``records_by_collection`` as JSON text, exactly as the Parquet columns hold them.
``duckdb.read_json('<path>/records/*/*.jsonl')`` reads it with no extra step.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bsky_backfill.core.models import RecordRow, RepoRow
from bsky_backfill.sinks.durable import fsync_file
from bsky_backfill.sinks.files import FileSink
from bsky_backfill.sinks.rows import (
    RECORD_COLUMNS,
    REPO_COLUMNS,
    RecordsFile,
    record_values,
    repo_values,
)

__all__ = ["JsonlSink"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _write_lines(dest: Path, lines: Iterable[bytes]) -> None:
    with open(dest, "wb") as f:
        f.writelines(lines)
        f.flush()
    fsync_file(dest)


def _line(columns: Sequence[str], values: Sequence[Any]) -> bytes:
    return (_encode(dict(zip(columns, values, strict=True))) + "\n").encode()


class _JsonlRecords:
    """A records file appended a chunk at a time."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        self._file = open(dest, "wb")  # noqa: SIM115 - closed by close() or abandon()

    def write(self, rows: Sequence[RecordRow]) -> None:
        self._file.writelines(_line(RECORD_COLUMNS, record_values(r)) for r in rows)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            fsync_file(self._dest)

    def abandon(self) -> None:
        self._file.close()


class JsonlSink(FileSink):
    """Writes the dataset as JSON Lines files; see the module docstring for the layout."""

    format = "jsonl"
    suffix = ".jsonl"
    partition_prefix = ""

    def _open_records(self, dest: Path) -> RecordsFile:
        return _JsonlRecords(dest)

    def _write_repos(self, dest: Path, rows: Sequence[RepoRow]) -> None:
        _write_lines(dest, (_line(REPO_COLUMNS, repo_values(r)) for r in rows))

    def _rewrite_without(self, src: Path, dest: Path, dids: frozenset[str]) -> int | None:
        with open(src, "rb") as f:
            lines = f.readlines()
        kept = [line for line in lines if json.loads(line)["did"] not in dids]
        if len(kept) == len(lines):
            return None
        if kept:
            _write_lines(dest, kept)
        return len(kept)

    def _read_file_stats(self, path: Path, kind: str) -> tuple[int, Counter[str]]:
        rows = 0
        statuses: Counter[str] = Counter()
        with open(path, "rb") as f:
            for line in f:
                rows += 1
                if kind == "repos":
                    statuses[json.loads(line)["status"]] += 1
        return rows, statuses
