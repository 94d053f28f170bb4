"""DIDs from a local file: ``.txt`` (one per line), ``.csv``, ``.jsonl`` or ``.parquet``
(a named column). Streams the file: a list of millions of DIDs is never loaded whole.

Values are yielded as found (stripped); checking them is the caller's job, so a bad
line becomes an ``invalid_did`` row instead of stopping the job.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from bsky_backfill.errors import ConfigError

__all__ = ["SUFFIXES", "read_did_file", "read_values"]

SUFFIXES = (".txt", ".csv", ".jsonl", ".parquet")


def read_did_file(path: Path, column: str = "did") -> Iterator[str]:
    """Yield the DIDs in ``path`` (see :func:`read_values`)."""
    return read_values(path, column)


def read_values(path: Path, column: str = "did") -> Iterator[str]:
    """Yield the non-empty string values of ``column`` in ``path`` (every line of a .txt);
    blank lines and ``#`` comments in .txt are skipped.

    Raises ``ConfigError`` naming the file when it is missing, of an unknown type, lacks
    ``column``, or a line of a .jsonl file is not a JSON object.
    """
    if not path.is_file():
        raise ConfigError(f"DID source file {path} does not exist", key="backfill.source.path")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _txt(path)
    if suffix == ".csv":
        return _csv(path, column)
    if suffix == ".jsonl":
        return _jsonl(path, column)
    if suffix == ".parquet":
        return _parquet(path, column)
    raise ConfigError(
        f"DID source file {path} has an unknown type; use one of {', '.join(SUFFIXES)}",
        key="backfill.source.path",
    )


def _txt(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            value = line.strip()
            if value and not value.startswith("#"):
                yield value


def _missing_column(path: Path, column: str, found: list[str]) -> ConfigError:
    return ConfigError(
        f"DID source file {path} has no column {column!r} (columns: {', '.join(found) or 'none'});"
        " set backfill.source.column",
        key="backfill.source.column",
    )


def _csv(path: Path, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise _missing_column(path, column, list(reader.fieldnames or []))
        for row in reader:
            value = (row.get(column) or "").strip()
            if value:
                yield value


def _jsonl(path: Path, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object per line")
            value = row.get(column)
            if isinstance(value, str) and value.strip():
                yield value.strip()


def _parquet(path: Path, column: str) -> Iterator[str]:
    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise _missing_column(path, column, parquet.schema_arrow.names)
    for batch in parquet.iter_batches(columns=[column], batch_size=65_536):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value.strip()
