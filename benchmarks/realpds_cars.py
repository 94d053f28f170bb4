"""Export repos written by the REAL reference PDS, for the reader benchmark.

Usage: python -m benchmarks.realpds_cars --out benchmarks/results/realpds [--scale N]

Starts the real PDS + PLC (``tests.support.realpds``; node and npm needed), fills accounts
with posts, likes, reposts, follows and edits (``tests.support.realpds_population``), and
writes each account's getRepo CAR as ``<did>.car`` plus ``keys.json`` (did -> did:key).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.support.realpds import RealNetwork, ensure_installed
from tests.support.realpds_population import PLANS, AccountPlan, populate


def plans(scale: int) -> tuple[AccountPlan, ...]:
    """The integration tests' accounts, plus ``scale`` larger ones."""
    big = tuple(
        AccountPlan(f"bench{i}", posts=600, likes=1200, reposts=200, follows=200, profile=True)
        for i in range(scale)
    )
    return PLANS + big


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the CARs")
    parser.add_argument("--scale", type=int, default=3, help="extra large accounts")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with RealNetwork(ensure_installed()) as network:
        snapshots = populate(network.client(), plans(args.scale))
    keys = {}
    for snapshot in snapshots.values():
        did = snapshot.account.did
        (args.out / f"{did}.car").write_bytes(snapshot.car)
        keys[did] = snapshot.signing_key()
    (args.out / "keys.json").write_text(json.dumps(keys, indent=2))
    total = sum(len(s.car) for s in snapshots.values())
    print(f"wrote {len(snapshots)} CARs, {total / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
