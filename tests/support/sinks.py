"""Sink test harness: rows to write, a miniature engine (stage, commit, publish, recover),
and what a dataset reader sees for each sink format.

Run as ``python -m tests.support.sinks FORMAT PATH LOG`` it is the crash-test child: it
runs ``run_job`` over ``crash_plan()``, printing each step before taking it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.sinks import SINK_TYPES, Manifest, Sink
from bsky_backfill.sinks.dynamodb import DynamoTables
from bsky_backfill.sinks.rows import (
    RECORD_COLUMNS,
    REPO_COLUMNS,
    counts_json,
    record_values,
    repo_values,
    rfc3339,
)
from tests.support import REPO_ROOT

__all__ = [
    "COLLECTIONS",
    "MANIFEST",
    "Batch",
    "crash_plan",
    "dynamodb_items",
    "expected",
    "first_batch",
    "kill_during",
    "plan",
    "repo_result",
    "run_job",
    "s3_sink",
    "visible",
    "visible_dynamodb",
    "visible_s3",
]

T0 = datetime(2025, 1, 1, tzinfo=UTC)
COLLECTIONS = ("app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow")

Batch = tuple[str, list[RepoResult], dict[str, str]]
"""``(batch_id, results, supersedes)``: one ``stage`` call."""

MANIFEST = Manifest(
    job_id="job-1",
    config={"backfill": {"name": "t", "storage": {"type": "x", "path": "p"}}},
    started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    finished_at=datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC),
)
"""What the engine would give ``finish``."""


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


def first_batch() -> list[Batch]:
    """One batch: two complete DIDs (7 and 5 records) and one not found."""
    done = DidState.COMPLETE
    dids = [("did:plc:a", 1, 7, done), ("did:plc:b", 1, 5, done)]
    return plan([("b1", [*dids, ("did:plc:gone", 1, 0, DidState.NOT_FOUND)])])


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


def kill_during(
    command: Sequence[str],
    phases: Sequence[str],
    rng: random.Random,
    *,
    env: dict[str, str] | None = None,
    pause: float = 0.1,
) -> list[str]:
    """Run the crash-test child ``command`` once per phase, SIGKILLing it within ``pause``
    seconds of its first or second line starting with that phase; return those lines."""
    kills = []
    for phase in phases:
        child = subprocess.Popen(
            list(command), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        target = rng.randrange(1, 3)
        for line in child.stdout:
            if line.startswith(phase) and (target := target - 1) == 0:
                time.sleep(rng.uniform(0, pause))
                child.send_signal(signal.SIGKILL)
                kills.append(line.strip())
                break
        child.stdout.close()
        child.wait(timeout=60)
    return kills


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


def s3_sink(uri: str, endpoint_url: str) -> Sink:
    """An ``S3ParquetSink`` at ``uri`` on an S3-compatible server (the tests' moto)."""
    from bsky_backfill.cloud.aws import AwsTarget
    from bsky_backfill.cloud.s3 import Bucket
    from bsky_backfill.sinks.s3 import S3ParquetSink

    return S3ParquetSink(Bucket(uri, AwsTarget(endpoint_url=endpoint_url)))


def visible_s3(uri: str, endpoint_url: str) -> tuple[Counter[tuple], Counter[tuple]]:
    """``(records, repos)`` of the Parquet dataset at ``uri``, read as a user would: pyarrow's
    S3 file system and hive-partitioned datasets over real HTTP."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    host = endpoint_url.split("://", 1)[1]
    s3 = fs.S3FileSystem(
        endpoint_override=host,
        scheme="http",
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ["AWS_DEFAULT_REGION"],
    )
    root = uri.removeprefix("s3://").rstrip("/")
    found = []
    for kind, columns in (("records", RECORD_COLUMNS), ("repos", REPO_COLUMNS)):
        info = s3.get_file_info(f"{root}/{kind}")
        if info.type == fs.FileType.NotFound:
            found.append(Counter())
            continue
        table = ds.dataset(
            f"{root}/{kind}", filesystem=s3, format="parquet", partitioning="hive"
        ).to_table()
        rows = zip(*(table.column(c).to_pylist() for c in columns), strict=True)
        found.append(
            Counter(
                tuple(rfc3339(v) if isinstance(v, datetime) else v for v in row) for row in rows
            )
        )
    return found[0], found[1]


def dynamodb_items(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` as plain Python values (a full scan)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    pages = client.get_paginator("scan").paginate(TableName=table)
    return [
        {name: deserializer.deserialize(value) for name, value in item.items()}
        for page in pages
        for item in page["Items"]
    ]


def visible_dynamodb(
    dynamodb: Any, s3: Any, job_id: str, tables: DynamoTables | None = None
) -> tuple[Counter[tuple], Counter[tuple]]:
    """``(records, repos)`` of ``job_id`` as a reader of the DynamoDB tables sees them, in
    the text forms of ``rows``; a record stored in the overflow bucket is read from there."""
    tables = tables or DynamoTables()
    records: Counter[tuple] = Counter()
    for item in dynamodb_items(dynamodb, tables.records):
        assert item.pop("key") == f"{item['collection']}/{item['rkey']}"
        if item["job_id"] != job_id:
            continue
        if uri := item.pop("record_s3_uri", None):
            bucket, key = uri.removeprefix("s3://").split("/", 1)
            item["record"] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        item.pop("record_omitted", None)
        assert set(item) <= set(RECORD_COLUMNS)
        records[tuple(item.get(column) for column in RECORD_COLUMNS)] += 1
    repos: Counter[tuple] = Counter()
    for item in dynamodb_items(dynamodb, tables.users):
        if item.pop("job_id") != job_id:
            continue
        item.pop("batch_id")
        item.pop("oversized_records", None)
        assert set(item) <= set(REPO_COLUMNS)
        counts = {collection: int(n) for collection, n in item["records_by_collection"].items()}
        item |= {
            "records": int(item["records"]),
            "bytes": int(item["bytes"]),
            "records_by_collection": counts_json(counts),
        }
        repos[tuple(item.get(column) for column in REPO_COLUMNS)] += 1
    return records, repos


def main(argv: Sequence[str]) -> None:
    """``FORMAT PATH LOG``; for ``s3`` PATH is an ``s3://`` URI and the server's URL is in
    ``BSKY_BACKFILL_TEST_S3``."""
    fmt, path, log = argv
    sink = (
        s3_sink(path, os.environ["BSKY_BACKFILL_TEST_S3"]) if fmt == "s3" else SINK_TYPES[fmt](path)
    )
    run_job(sink, Path(log), crash_plan(), lambda s: print(s, flush=True))


if __name__ == "__main__":
    main(sys.argv[1:])
