"""Reading a downloaded repo: a spooled repo small enough is read in memory, by the C reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bsky_backfill.atproto.identity import Identity, SigningKey
from bsky_backfill.core import worker
from bsky_backfill.core.models import RecordRow
from tests.support.repos import DID, KEY, make_repo

NOW = datetime(2026, 12, 4, tzinfo=UTC)
IDENTITY = Identity(
    DID, "https://pds.example", SigningKey("multikey", KEY.public_key.multikey), None
)


def read_spooled(
    path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> tuple[type, list[RecordRow]]:
    """The rows of the repo at ``path`` as the worker reads it with ``limit`` as
    ``read_in_memory_bytes``, and what it handed the reader (bytes or the path)."""
    handed: list[type] = []
    real = worker.read_repo

    def spy(content: Any, **kwargs: Any) -> Any:
        handed.append(type(content))
        return real(content, **kwargs)

    monkeypatch.setattr(worker, "read_repo", spy)
    options = worker.WorkerOptions(job_id="j", read_in_memory_bytes=limit)
    result = worker._read(path, IDENTITY, options, NOW)
    assert isinstance(result.records, tuple)
    return handed[0], list(result.records)


def test_a_spooled_repo_up_to_the_limit_is_read_in_memory_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spooled.car"
    path.write_bytes(make_repo(40).car)
    size = path.stat().st_size
    in_memory, rows = read_spooled(path, monkeypatch, limit=size)
    from_file, again = read_spooled(path, monkeypatch, limit=size - 1)
    assert (in_memory, from_file) == (bytes, type(path))
    assert len(rows) == 40
    assert rows == again
