"""The engine's per-record CPU, stage by stage, without the network or the event loop.

Usage: python -m benchmarks.bench_pipeline [--accounts N] [--repeats N] [--default-gc]
                                           [--out results.json]

Builds the repos of a fakenet population in memory (the end-to-end run's record mix and
sizes), then times, in CPU seconds of this process (best of ``--repeats``), what the
worker thread and the sink do to them: ``read`` (verify + walk + decode every record,
``verify: full``), ``rows`` (read + the selection's rows: time window, convenience
columns, JSON text) and ``parquet`` (staging and publishing the rows, 10 DIDs a batch).
Reported in microseconds per record, so a change to one stage shows in its line.
The collector runs with the thresholds ``bsky-backfill`` sets (``--default-gc``: Python's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_e2e import COLLECTIONS, END, START
from benchmarks.machine import RESULTS, save
from bsky_backfill.atproto.identity import Identity, SigningKey
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.core.models import RepoResult
from bsky_backfill.core.select import Selection
from bsky_backfill.core.worker import WorkerOptions, _read
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.world import World
from bsky_backfill.process import tune_process
from bsky_backfill.sinks.parquet import ParquetSink

Repo = tuple[bytes, Identity]


def build(accounts: int) -> list[Repo]:
    """The CARs of every active account, with the identity that verifies each."""
    spec = PopulationSpec(seed=7, accounts=accounts, hosts=1, size_scale=1000.0, web_share=0.0)
    world = World(spec)
    repos = []
    for account in world:
        if account.status == "active":
            key = SigningKey("multikey", account.seed.keypair.public_key.multikey)
            repos.append((world.export(account).car, Identity(account.did, "https://p", key, None)))
    return repos


def best(repeats: int, step: Callable[[], Any]) -> tuple[float, Any]:
    """The least CPU time of ``repeats`` runs of ``step``, and its last result."""
    least, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = step()
        least = min(least, time.process_time() - started)
    return least, result


def read_only(repos: list[Repo]) -> int:
    count = 0
    for car, identity in repos:
        key = identity.signing_key.public_key().did_key
        with read_repo(car, signing_key=key, did=identity.did, collections=COLLECTIONS) as repo:
            count += sum(1 for _ in repo.record_parts())
    return count


def rows(repos: list[Repo]) -> list[RepoResult]:
    selection = Selection(
        collections=frozenset(COLLECTIONS),
        start=datetime.fromisoformat(START).replace(tzinfo=UTC),
        end=datetime.fromisoformat(END).replace(tzinfo=UTC),
    )
    options = WorkerOptions(job_id="bench", selection=selection)
    now = datetime.now(UTC)
    return [_read(car, identity, options, now) for car, identity in repos]


def parquet(results: list[RepoResult]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        sink = ParquetSink(Path(folder))
        for start in range(0, len(results), 10):
            sink.stage(f"b{start}", results[start : start + 10])
            sink.publish(f"b{start}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-gc", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args(argv)
    if not args.default_gc:
        tune_process()
    repos = build(args.accounts)
    read_s, records = best(args.repeats, lambda: read_only(repos))
    rows_s, results = best(args.repeats, lambda: rows(repos))
    parquet_s, _ = best(args.repeats, lambda: parquet(results))
    kept = sum(len(r.records) for r in results)
    figures = {
        "repos": len(repos),
        "records": records,
        "kept": kept,
        "read_us": round(read_s / records * 1e6, 2),
        "rows_us": round(rows_s / kept * 1e6, 2),
        "parquet_us": round(parquet_s / kept * 1e6, 2),
        "records_per_s": round(kept / (rows_s + parquet_s)),
        "collector": "default" if args.default_gc else "tuned",
    }
    print(
        f"{len(repos)} repos, {kept:,} records kept: read {figures['read_us']} us, "
        f"read + rows {figures['rows_us']} us, Parquet {figures['parquet_us']} us per record "
        f"-> {figures['records_per_s']:,} records/s per core ({figures['collector']} collector)"
    )
    save(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
