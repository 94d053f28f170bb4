"""Cloud sink write speed against moto (S3 and DynamoDB over real HTTP on loopback).

Usage: python -m benchmarks.bench_cloud_sinks [--rows N] [--batch-rows N] [--out F]

The same rows as ``bench_sinks`` (small likes, 100 per DID), staged and published in
batches into an ``S3ParquetSink`` and a ``DynamoDbSink``. moto runs in its own process,
so this process's CPU seconds are the client's own cost (Parquet encoding, request
signing, JSON); wall time includes moto's, which is not AWS's: read it as a lower bound
on the client's share, not as a prediction of throughput against AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.support.moto import start_moto

from benchmarks.bench_sinks import PER_DID, make_results
from bsky_backfill.cloud.aws import AwsTarget
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.core.models import RepoResult
from bsky_backfill.sinks import Sink
from bsky_backfill.sinks.dynamodb import DynamoDbSink, DynamoTables
from bsky_backfill.sinks.s3 import S3ParquetSink


def measure(sink: Sink, results: list[RepoResult], batch_rows: int) -> dict[str, float]:
    per_batch = max(1, batch_rows // PER_DID)
    wall, cpu = time.perf_counter(), time.process_time()
    for b, start in enumerate(range(0, len(results), per_batch)):
        sink.stage(f"b{b:06d}", results[start : start + per_batch])
        sink.publish(f"b{b:06d}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = len(results) * PER_DID
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rows_per_s_wall": round(rows / wall),
        "rows_per_s_cpu": round(rows / cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = make_results(args.rows)
    process, moto = start_moto()
    os.environ.update({k: v for k, v in moto.env.items() if k.startswith("AWS_")})
    report = []
    try:
        target = AwsTarget(endpoint_url=moto.url)
        moto.bucket("bench")
        with tempfile.TemporaryDirectory() as staging:
            dynamodb = DynamoDbSink(
                DynamoTables(), target, job_id="bench", staging_dir=Path(staging)
            )
            dynamodb.check(create_tables=True)
            sinks: dict[str, Sink] = {
                "s3": S3ParquetSink(Bucket("s3://bench/dataset", target)),
                "dynamodb": dynamodb,
            }
            for name, sink in sinks.items():
                row = {"sink": name, "rows": args.rows, "batch_rows": args.batch_rows}
                row |= measure(sink, results, args.batch_rows)
                report.append(row)
                print(json.dumps(row), flush=True)
    finally:
        process.terminate()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
