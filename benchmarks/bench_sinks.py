"""Sink write speed: record rows per second through ``stage`` + ``publish``.

Usage: python -m benchmarks.bench_sinks [--rows N] [--batch-rows N ...] [--formats F,...]
                                        [--dir DIR] [--out results.json]

Rows are small likes (a 150-byte record JSON, a subject URI, ``created_at``) spread over
three collections, 100 per DID, so a batch of 10,000 rows is the engine's default batch
of 100 DIDs. Building the rows is not timed. For each format and batch size it reports
wall seconds and CPU seconds of this process (``process_time``, all threads: pyarrow
compresses on its own threads) for staging and publishing every batch, fsyncs included,
into a fresh dataset under ``--dir`` (default: the system temp directory).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.sinks import SINK_TYPES

COLLECTIONS = ("app.bsky.feed.like", "app.bsky.feed.repost", "app.bsky.graph.follow")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
PER_DID = 100


def make_results(rows: int) -> list[RepoResult]:
    """``rows`` record rows, ``PER_DID`` per DID, with their repo rows."""
    results = []
    for d in range(rows // PER_DID):
        did = f"did:plc:{d:024d}"
        records = []
        for i in range(PER_DID):
            collection = COLLECTIONS[i % 3]
            rkey = f"3l{d:06d}{i:05d}"
            subject = f"at://did:plc:{i:024d}/app.bsky.feed.post/3k{d:011d}"
            created = T0 + timedelta(seconds=d * PER_DID + i)
            value = (
                f'{{"$type":"{collection}","createdAt":"{created:%Y-%m-%dT%H:%M:%S}.000Z",'
                f'"subject":{{"uri":"{subject}","cid":"bafyreib{d:052d}"}}}}'
            )
            records.append(
                RecordRow(
                    did=did,
                    collection=collection,
                    rkey=rkey,
                    uri=f"at://{did}/{collection}/{rkey}",
                    cid=f"bafyreia{d:026d}{i:026d}",
                    created_at=created,
                    record=value,
                    rev="3lrev000000002",
                    commit_cid="bafyreicommit",
                    pds="https://pds.example",
                    job_id="bench",
                    fetched_at=T0,
                    subject_uri=subject,
                )
            )
        repo = RepoRow(did=did, status=DidState.COMPLETE, records=PER_DID, fetched_at=T0)
        results.append(RepoResult(repo, tuple(records)))
    return results


def measure(fmt: str, results: list[RepoResult], batch_rows: int, base: Path) -> dict[str, float]:
    """Stage and publish ``results`` in batches of ``batch_rows`` rows; return timings."""
    per_batch = max(1, batch_rows // PER_DID)
    with tempfile.TemporaryDirectory(dir=base) as directory:
        sink = SINK_TYPES[fmt](Path(directory) / "dataset")
        wall, cpu = time.perf_counter(), time.process_time()
        for b, start in enumerate(range(0, len(results), per_batch)):
            batch_id = f"b{b:06d}"
            sink.stage(batch_id, results[start : start + per_batch])
            sink.publish(batch_id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
    rows = len(results) * PER_DID
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rows_per_s_wall": round(rows / wall),
        "rows_per_s_cpu": round(rows / cpu),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[1_000_000, 10_000])
    parser.add_argument("--formats", default="parquet")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    results = make_results(args.rows)
    report = {"python": sys.version.split()[0], "machine": platform.machine(), "runs": []}
    for fmt in args.formats.split(","):
        for batch_rows in args.batch_rows:
            row = {"format": fmt, "rows": args.rows, "batch_rows": batch_rows}
            row |= measure(fmt, results, batch_rows, args.dir)
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
