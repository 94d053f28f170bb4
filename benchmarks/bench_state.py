"""Job store speed: adding, claiming and committing DIDs at the scale of a large job.

Usage: python -m benchmarks.bench_state [--url URL] [--dids N] [--commit N] [--schema S]

Without ``--url`` the store is a fresh SQLite file in a temporary directory; with a
PostgreSQL URL pass ``--schema`` (created, and dropped afterwards). It times, in wall
seconds (the database's own work is most of it):
- ``add``: ``add_dids`` of N new DIDs (chunked, one transaction per chunk);
- ``re-add``: the same N again (every one a duplicate: what a resumed job does);
- ``claim``: ``claim(limit=100)`` until none is left;
- ``commit``: ``next_batch_id`` + ``commit_batch`` + ``mark_published`` per 100 DIDs, for
  the first ``--commit`` DIDs;
- ``counts``: one ``counts`` call on the full job;
and prints DIDs/s for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.state import SqlJobStore, StoreOptions

JOB = "bench"


async def run(url: str | Path, options: StoreOptions, n: int, n_commit: int) -> dict[str, float]:
    dids = [f"did:plc:{i:024d}" for i in range(n)]
    figures: dict[str, float] = {}
    async with await SqlJobStore.open(url, options) as store:
        await store.create_job(JOB, "bench", "", "h")

        start = time.perf_counter()
        await store.add_dids(JOB, dids)
        figures["add"] = n / (time.perf_counter() - start)

        start = time.perf_counter()
        await store.add_dids(JOB, dids)
        figures["re-add"] = n / (time.perf_counter() - start)

        start = time.perf_counter()
        claimed: list[str] = []
        while claims := await store.claim(JOB, 100, worker_id="bench"):
            claimed += [c.did for c in claims]
        figures["claim"] = len(claimed) / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(0, min(n_commit, len(claimed)), 100):
            batch = await store.next_batch_id(JOB, worker_id="bench")
            rows = [
                RepoRow(d, DidState.COMPLETE, rev="3laaaaaaaaa22", records=10)
                for d in claimed[i : i + 100]
            ]
            await store.commit_batch(JOB, batch, rows)
            await store.mark_published(JOB, batch)
        figures["commit"] = min(n_commit, len(claimed)) / (time.perf_counter() - start)

        start = time.perf_counter()
        await store.counts(JOB)
        figures["counts_seconds"] = time.perf_counter() - start
    return figures


async def drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bsky_backfill.state.sql.engine import store_url

    engine = create_async_engine(store_url(url))
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--schema", help="PostgreSQL schema for the run (dropped afterwards)")
    parser.add_argument("--dids", type=int, default=1_000_000)
    parser.add_argument("--commit", type=int, default=50_000)
    args = parser.parse_args()
    options = StoreOptions(schema=args.schema)
    with tempfile.TemporaryDirectory() as tmp:
        url: str | Path = args.url or Path(tmp) / "state.db"
        try:
            figures = asyncio.run(run(url, options, args.dids, args.commit))
        finally:
            if args.url and args.schema:
                asyncio.run(drop_schema(args.url, args.schema))
    backend = "postgresql" if args.url and "postgres" in args.url else "sqlite"
    print(json.dumps({"backend": backend, "dids": args.dids, **figures}, indent=2))


if __name__ == "__main__":
    main()
