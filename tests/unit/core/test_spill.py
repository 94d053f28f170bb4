"""Spilled rows: a huge repo's rows on disk in chunks, read back exactly, then deleted."""

from __future__ import annotations

import gc
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsky_backfill.atproto.identity import Identity, SigningKey
from bsky_backfill.core import worker
from bsky_backfill.core.models import RepoResult
from bsky_backfill.core.spill import SpilledRows
from bsky_backfill.core.worker import WorkerOptions
from bsky_backfill.fakenet.repo_writer import build_repo
from tests.support.repos import DID, KEY, make_records
from tests.support.sinks import repo_result

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def test_chunks_come_back_in_order_and_whole(tmp_path: Path) -> None:
    rows = repo_result("did:plc:a", n=12).records
    spilled = SpilledRows(tmp_path)
    spilled.append(rows[:5])
    spilled.append(rows[5:])
    assert len(spilled) == 12
    assert [len(chunk) for chunk in spilled.chunks()] == [5, 7]
    assert tuple(spilled) == tuple(spilled) == rows  # again and again
    assert stat.S_IMODE(spilled.path.stat().st_mode) == 0o600
    spilled.close()
    spilled.close()
    assert not spilled.path.exists()


def test_a_dropped_spill_deletes_its_file(tmp_path: Path) -> None:
    spilled = SpilledRows(tmp_path)
    spilled.append(repo_result("did:plc:a", n=2).records)
    result = RepoResult(repo_result("did:plc:a").repo, spilled)
    path = spilled.path
    del spilled, result
    gc.collect()
    assert not path.exists()


def test_a_repo_with_more_rows_than_a_chunk_is_spilled_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = build_repo(DID, make_records(40, seed=5), rev="3l4cqjgbemz2c", sign=KEY.sign)
    key = SigningKey("multikey", KEY.public_key.multikey)
    identity = Identity(DID, "https://pds.test", key, None)
    options = WorkerOptions(job_id="j", spool_dir=tmp_path)
    in_memory = worker._read(export.car, identity, options, NOW)
    monkeypatch.setattr(worker, "SPILL_ROWS", 15)
    spilled = worker._read(export.car, identity, options, NOW)
    assert isinstance(in_memory.records, tuple)
    assert isinstance(spilled.records, SpilledRows)
    assert [len(chunk) for chunk in spilled.records.chunks()] == [15, 15, 10]
    assert tuple(spilled.records) == in_memory.records
    assert spilled.repo == in_memory.repo
    assert list(tmp_path.iterdir()) == [spilled.records.path]
    spilled.close()
    assert list(tmp_path.iterdir()) == []
