"""DIDs from a local file: ``.txt`` (one per line), ``.csv``, ``.jsonl`` or ``.parquet``
(a named column). Streams the file: a list of millions of DIDs is never loaded whole.

Values are yielded as found (stripped); checking them is the caller's job, so a bad
line becomes an ``invalid_did`` row instead of stopping the job. The readers of one
format work on any stream, so the S3 source shares them (``name`` is what errors show).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import pyarrow.parquet as pq

from bsky_backfill.errors import ConfigError

__all__ = [
    "SUFFIXES",
    "check_suffix",
    "read_did_file",
    "read_values",
    "values_from_parquet",
    "values_from_text",
]

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
    if suffix == ".parquet":
        return values_from_parquet(path, column, str(path))
    check_suffix(suffix, str(path))
    return _text_file(path, suffix, column)


def check_suffix(suffix: str, name: str) -> None:
    """``ConfigError`` unless ``suffix`` (lower case, with the dot) is a table file's."""
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"DID source file {name} has an unknown type; use one of {', '.join(SUFFIXES)}",
            key="backfill.source.path",
        )


def _text_file(path: Path, suffix: str, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        yield from values_from_text(handle, suffix, column, str(path))


def values_from_text(handle: IO[str], suffix: str, column: str, name: str) -> Iterator[str]:
    """The values of a ``.txt``/``.csv``/``.jsonl`` stream (opened with ``newline=""``)."""
    if suffix == ".txt":
        return _txt(handle)
    if suffix == ".csv":
        return _csv(handle, column, name)
    return _jsonl(handle, column, name)


def _txt(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        value = line.strip()
        if value and not value.startswith("#"):
            yield value


def _missing_column(name: str, column: str, found: list[str]) -> ConfigError:
    return ConfigError(
        f"DID source file {name} has no column {column!r} (columns: {', '.join(found) or 'none'});"
        " set backfill.source.column",
        key="backfill.source.column",
    )


def _csv(handle: IO[str], column: str, name: str) -> Iterator[str]:
    reader = csv.DictReader(handle)
    if column not in (reader.fieldnames or []):
        raise _missing_column(name, column, list(reader.fieldnames or []))
    for row in reader:
        value = (row.get(column) or "").strip()
        if value:
            yield value


def _jsonl(lines: Iterable[str], column: str, name: str) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{name}:{number}: expected a JSON object per line")
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            yield value.strip()


def values_from_parquet(source: Path | IO[bytes], column: str, name: str) -> Iterator[str]:
    """The values of ``column`` in a Parquet file (a path or a seekable binary file)."""
    parquet = pq.ParquetFile(source)
    if column not in parquet.schema_arrow.names:
        raise _missing_column(name, column, parquet.schema_arrow.names)
    for batch in parquet.iter_batches(columns=[column], batch_size=65_536):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value.strip()
