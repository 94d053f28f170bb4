"""Baseline: the straightforward script a researcher writes with the ``atproto`` SDK.

Usage: python -m benchmarks.bench_baseline [--quick] [--out FILE]

For each DID in turn: resolve its DID document with the SDK's resolver (pointed at the
simulated PLC directory), ``com.atproto.sync.getRepo`` with the SDK's client,
``CAR.from_bytes``, then walk every block and keep the records of the wanted collections
whose ``createdAt`` is in the window; rows are written to Parquet every 100 DIDs. No
hash, signature or MST checks, no record keys (they live in the MST, which such a script
does not walk), no retries, no resume.

Run alone it does what ``bench_e2e --baseline`` does: one network (the same population as
``bench_e2e``), the engine's job first, then this script, and the ratio of the two.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from atproto import CAR, Client, IdResolver

from benchmarks.bench_scheduler import Network
from benchmarks.machine import load

FLUSH_EVERY = 100  # DIDs per Parquet file


@dataclass
class BaselineResult:
    dids: int
    repos: int
    errors: int
    records_kept: int
    wall_s: float
    cpu_s: float
    repos_per_s: float
    records_per_s: float
    cpu_s_per_million_records: float
    records_per_s_per_core: float
    load_after: str


def created_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def records_of(
    did: str, car: CAR, wanted: set[str], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The wanted records in the window among the CAR's blocks."""
    rows = []
    for cid, block in car.blocks.items():
        if not isinstance(block, dict) or block.get("$type") not in wanted:
            continue
        moment = created_at(block.get("createdAt"))
        if moment is None or moment.tzinfo is None or not start <= moment < end:
            continue
        rows.append(
            {
                "did": did,
                "collection": block["$type"],
                "cid": str(cid),
                "created_at": moment,
                "record": json.dumps(block, default=str),
            }
        )
    return rows


def backfill(
    dids: list[str], plc: str, wanted: set[str], start: datetime, end: datetime, out: Path
) -> tuple[int, int, int]:
    """The researcher's loop: (repos read, DIDs that failed, records kept)."""
    resolver = IdResolver(plc_url=plc)
    clients: dict[str, Client] = {}
    rows: list[dict[str, Any]] = []
    repos = errors = kept = 0
    out.mkdir(parents=True, exist_ok=True)
    for i, did in enumerate(dids, 1):
        try:
            doc = resolver.did.resolve(did)
            pds = doc.get_pds_endpoint() if doc else None
            if pds is None:
                raise ValueError("no PDS")
            client = clients.setdefault(pds, Client(base_url=f"{pds}/xrpc"))
            car = CAR.from_bytes(client.com.atproto.sync.get_repo({"did": did}))
        except Exception:  # deactivated, taken down, ...: a script logs and moves on
            errors += 1
            continue
        repos += 1
        found = records_of(did, car, wanted, start, end)
        kept += len(found)
        rows.extend(found)
        if i % FLUSH_EVERY == 0 or i == len(dids):
            pq.write_table(pa.Table.from_pylist(rows), out / f"part-{i:08d}.parquet")
            rows = []
    return repos, errors, kept


def run_baseline(
    network: Network, folder: Path, collections: list[str], start: str, end: str
) -> BaselineResult:
    """The baseline over every account of ``network``; wall and this process's CPU."""
    dids = [did for did, _, _ in network.accounts]
    window = (datetime.fromisoformat(f"{start}T00:00:00+00:00"),)
    window += (datetime.fromisoformat(f"{end}T00:00:00+00:00"),)
    cpu = time.process_time()
    started = time.monotonic()
    repos, errors, kept = backfill(dids, network.plc, set(collections), *window, folder)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu
    return BaselineResult(
        dids=len(dids),
        repos=repos,
        errors=errors,
        records_kept=kept,
        wall_s=round(wall, 2),
        cpu_s=round(cpu, 2),
        repos_per_s=round(repos / wall, 1),
        records_per_s=round(kept / wall),
        cpu_s_per_million_records=round(cpu / kept * 1e6, 2),
        records_per_s_per_core=round(kept / cpu),
        load_after=load(),
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks import bench_e2e

    args = list(sys.argv[1:] if argv is None else argv)
    if "--baseline" not in args:
        args.append("--baseline")
    if "--out" not in args:
        quick = "--quick" in args
        args += ["--out", str(bench_e2e.RESULTS / f"baseline_{'quick' if quick else 'full'}.json")]
    return bench_e2e.main(args)


if __name__ == "__main__":
    sys.exit(main())
