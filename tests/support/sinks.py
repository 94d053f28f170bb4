"""Sink test harness: rows to write, a miniature engine (stage, commit, publish, recover),
and what a dataset reader sees for each sink format.

Run as ``python -m tests.support.sinks FORMAT PATH LOG`` it is the crash-test child: it
runs ``run_job`` over ``crash_plan()``, printing each step before taking it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.sinks import SINK_TYPES, Sink
from bsky_backfill.sinks.rows import (
    RECORD_COLUMNS,
    REPO_COLUMNS,
    record_values,
    repo_values,
    rfc3339,
)

__all__ = [
    "COLLECTIONS",
    "Batch",
    "crash_plan",
    "expected",
    "plan",
    "repo_result",
    "run_job",
    "visible",
]

T0 = datetime(2025, 1, 1, tzinfo=UTC)
COLLECTIONS = ("app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow")

Batch = tuple[str, list[RepoResult], dict[str, str]]
"""``(batch_id, results, supersedes)``: one ``stage`` call."""


def repo_result(
    did: str, version: int = 1, n: int = 6, status: DidState = DidState.COMPLETE
) -> RepoResult:
    """A DID's deterministic result; ``version`` changes every row (a later fetch)."""
    if status is not DidState.COMPLETE:
        return RepoResult(RepoRow(did=did, status=status, error=f"{status.value} at v{version}"))
    fetched = T0 + timedelta(days=version)
    records = []
    for i in range(n):
        collection = COLLECTIONS[i % len(COLLECTIONS)]
        rkey = f"3v{version}k{i:05d}"
        missing = i % 5 == 4
        value = {"$type": collection, "text": f"héllo ✨ {did} v{version} #{i}"}
        records.append(
            RecordRow(
                did=did,
                collection=collection,
                rkey=rkey,
                uri=f"at://{did}/{collection}/{rkey}",
                cid=f"bafyrei{version}x{i}",
                created_at=None if missing else T0 + timedelta(minutes=i, microseconds=i),
                record=json.dumps(value, ensure_ascii=False),
                rev=f"rev{version}",
                commit_cid=f"bafycommit{version}",
                pds="https://pds.test",
                job_id="job-1",
                fetched_at=fetched,
                text=value["text"] if collection == COLLECTIONS[0] else None,
                subject_uri=f"at://did:plc:other/{COLLECTIONS[0]}/{i}" if i % 3 == 1 else None,
                subject_did="did:plc:followed" if i % 3 == 2 else None,
                created_at_flag="missing" if missing else None,
            )
        )
    by_collection = Counter(r.collection for r in records)
    repo = RepoRow(
        did=did,
        status=status,
        handle=f"{did.rsplit(':', 1)[-1]}.test",
        pds="https://pds.test",
        rev=f"rev{version}",
        commit_cid=f"bafycommit{version}",
        verified="full",
        records=n,
        records_by_collection=dict(by_collection),
        bytes=1000 * n,
        fetched_at=fetched,
    )
    return RepoResult(repo, tuple(records))


def plan(steps: Sequence[tuple[str, Sequence[tuple[str, int, int, DidState]]]]) -> list[Batch]:
    """Batches from ``(batch_id, [(did, version, n, status), ...])`` steps, with the
    ``supersedes`` a state store would give: each DID's previous batch, if any."""
    holder: dict[str, str] = {}
    batches: list[Batch] = []
    for batch_id, dids in steps:
        results = [repo_result(did, version, n, status) for did, version, n, status in dids]
        supersedes = {did: holder[did] for did, *_ in dids if did in holder}
        holder.update({did: batch_id for did, *_ in dids})
        batches.append((batch_id, results, supersedes))
    return batches


def crash_plan() -> list[Batch]:
    """Five new batches, then three re-runs that supersede rows (one twice, one to gone)."""
    done = DidState.COMPLETE
    steps = [
        (f"b{b:02d}", [(f"did:plc:b{b}d{i}", 1, 40, done) for i in range(4)]) for b in range(5)
    ]
    steps += [
        ("b05", [("did:plc:b0d0", 2, 30, done), ("did:plc:b0d1", 2, 50, done)]),
        ("b06", [("did:plc:b0d0", 3, 20, done), ("did:plc:b1d0", 2, 0, DidState.DEACTIVATED)]),
        ("b07", [("did:plc:b2d3", 2, 45, done), ("did:plc:new", 1, 10, done)]),
    ]
    return plan(steps)


def expected(batches: Sequence[Batch]) -> tuple[Counter[tuple], Counter[tuple]]:
    """What a clean run of ``batches`` leaves visible: each DID's last result only."""
    last: dict[str, RepoResult] = {}
    for _, results, _ in batches:
        last.update({result.repo.did: result for result in results})
    records = Counter(record_values(r) for result in last.values() for r in result.records)
    return records, Counter(repo_values(result.repo) for result in last.values())


def run_job(sink: Sink, log: Path, batches: Sequence[Batch], say: Callable[[str], None]) -> None:
    """The engine's side of the protocol; ``log`` (fsynced lines) is the state store.

    Recovery publishes committed staged batches in reverse order, on purpose: publishing
    order must not matter.
    """
    committed = set(log.read_text().split("\n")[:-1]) if log.exists() else set()
    for batch_id in sorted(sink.staged_batches(), reverse=True):
        say(f"recover {batch_id}")
        (sink.publish if batch_id in committed else sink.discard)(batch_id)
    for batch_id, results, supersedes in batches:
        if batch_id in committed:
            continue
        say(f"stage {batch_id}")
        sink.stage(batch_id, results, supersedes)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{batch_id}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        say(f"publish {batch_id}")
        sink.publish(batch_id)
    say("done")


def visible(fmt: str, path: Path) -> tuple[Counter[tuple], Counter[tuple]]:
    """``(records, repos)`` as a reader of the dataset sees them, in text forms.

    Parquet through DuckDB over the DESIGN globs, JSONL by reading every line under
    ``records/`` and ``repos/``, SQLite through the ``_v`` views.
    """
    if fmt == "parquet":
        return (
            _duckdb(path, "records/**/*.parquet", RECORD_COLUMNS),
            _duckdb(path, "repos/*.parquet", REPO_COLUMNS),
        )
    if fmt == "jsonl":
        return (
            _jsonl(path, "records/*/*.jsonl", RECORD_COLUMNS),
            _jsonl(path, "repos/*.jsonl", REPO_COLUMNS),
        )
    database = path / "dataset.sqlite"
    if not database.exists():
        return Counter(), Counter()
    with closing(sqlite3.connect(database)) as db:
        records = Counter(db.execute(f"SELECT {', '.join(RECORD_COLUMNS)} FROM records_v"))
        repos = Counter(db.execute(f"SELECT {', '.join(REPO_COLUMNS)} FROM repos_v"))
    return records, repos


def _duckdb(path: Path, pattern: str, columns: Sequence[str]) -> Counter[tuple]:
    if not any(path.glob(pattern)):
        return Counter()
    query = (
        f"SELECT {', '.join(columns)} FROM read_parquet('{path / pattern}', hive_partitioning=true)"
    )
    return Counter(
        tuple(rfc3339(v) if isinstance(v, datetime) else v for v in row)
        for row in duckdb.sql(query).fetchall()
    )


def _jsonl(path: Path, pattern: str, columns: Sequence[str]) -> Counter[tuple]:
    found: Counter[tuple] = Counter()
    for file in path.glob(pattern):
        for line in file.read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            assert list(obj) == list(columns)
            found[tuple(obj[c] for c in columns)] += 1
    return found


def main(argv: Sequence[str]) -> None:
    fmt, path, log = argv
    run_job(SINK_TYPES[fmt](path), Path(log), crash_plan(), lambda s: print(s, flush=True))


if __name__ == "__main__":
    main(sys.argv[1:])
