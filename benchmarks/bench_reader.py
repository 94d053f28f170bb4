"""Reader speed: ``read_repo`` at each verify level vs ``libipld.decode_car`` alone.

Usage: python -m benchmarks.bench_reader [--quick] [--car-dir DIR] [--out results.json]

For each CAR set (generated repos of several sizes, plus the CARs in ``--car-dir``, e.g.
repos the real PDS wrote, exported by ``benchmarks.realpds_cars``) it times, in CPU
seconds of this one thread (``process_time``, less disturbed by other load than wall
time), the best of N interleaved runs of:
- ``decode_car``: ``libipld.decode_car`` — framing + decoding every block, no checks;
- ``full`` / ``hashes`` / ``none``: ``read_repo`` iterating every record as the engine
  does (``record_parts``: each record as atproto JSON and its fields), with the C reader;
- ``full, Python reader``: ``full`` with ``native=False``;
- ``filter``: ``full`` with a rare collection only.
and prints MB/s, records/s and the ratio to ``decode_car``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import libipld

from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.atproto.syntax import micros_to_tid
from bsky_backfill.fakenet.records import generate_records
from bsky_backfill.fakenet.repo_writer import build_repo

KEY = Keypair.from_seed("k256", "bench-reader")
DID = "did:plc:benchreaderaaaaaaaaaaaaa"
RARE = "app.bsky.graph.block"


@dataclass(frozen=True)
class CarSet:
    name: str
    cars: list[tuple[bytes, str | None]]  # (CAR, signing key or None when unknown)

    @property
    def size(self) -> int:
        return sum(len(car) for car, _ in self.cars)


@dataclass(frozen=True)
class Row:
    car_set: str
    mode: str
    mbytes: float
    records: int
    cpu_seconds: float
    ratio_to_decode_car: float

    @property
    def mb_per_s(self) -> float:
        return self.mbytes / self.cpu_seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.cpu_seconds


def generated(name: str, sizes: list[int], seed: int) -> CarSet:
    rng = random.Random(seed)
    rev = micros_to_tid(1_760_000_000_000_000)
    cars = [
        (build_repo(DID, generate_records(n, rng), rev=rev, sign=KEY.sign).car, KEY.did_key)
        for n in sizes
    ]
    return CarSet(name, cars)


def read_all(
    cars: list[tuple[bytes, str | None]],
    verify: str,
    collections: list[str] | None,
    *,
    native: bool = True,
) -> int:
    """Read every record as the engine does (``record_parts``: verified, each record as
    atproto JSON and its fields); ``native=False``: the Python reader alone."""
    count = 0
    for car, key in cars:
        level = verify if key is not None or verify != "full" else "hashes"
        with read_repo(
            car, signing_key=key, verify=level, collections=collections, native=native
        ) as repo:
            for _ in repo.record_parts():
                count += 1
    return count


def from_dir(directory: Path) -> CarSet:
    keys_file = directory / "keys.json"
    keys = json.loads(keys_file.read_text()) if keys_file.is_file() else {}
    cars = [(path.read_bytes(), keys.get(path.stem)) for path in sorted(directory.glob("*.car"))]
    return CarSet(f"{directory.name} CARs", cars)


def small_sizes(count: int) -> list[int]:
    return [random.Random(i).randrange(20, 400) for i in range(count)]


def decode_each(cars: list[tuple[bytes, str | None]]) -> None:
    """decode_car on each CAR, each result dropped before the next (as a reader would)."""
    for car, _ in cars:
        libipld.decode_car(car)


def best_cpu(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def measure(car_set: CarSet, repeats: int) -> list[Row]:
    modes: dict[str, Callable[[], object]] = {
        "decode_car": lambda: decode_each(car_set.cars),
        "full": lambda: read_all(car_set.cars, "full", None),
        "full, Python reader": lambda: read_all(car_set.cars, "full", None, native=False),
        "hashes": lambda: read_all(car_set.cars, "hashes", None),
        "none": lambda: read_all(car_set.cars, "none", None),
        f"filter {RARE}": lambda: read_all(car_set.cars, "full", [RARE]),
    }
    totals = {mode: float("inf") for mode in modes}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all modes alike
        for mode, fn in modes.items():
            totals[mode] = min(totals[mode], best_cpu(fn, 1))
    records = read_all(car_set.cars, "none", None)
    rare = read_all(car_set.cars, "none", [RARE])
    floor = totals["decode_car"]
    return [
        Row(
            car_set.name,
            mode,
            car_set.size / 1e6,
            rare if mode.startswith("filter") else records,
            seconds,
            seconds / floor,
        )
        for mode, seconds in totals.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets, fewer repeats")
    parser.add_argument("--car-dir", type=Path, help="CARs (+ keys.json: did -> did:key)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    scale = 1 if args.quick else 4
    sets = [
        generated("many small repos", small_sizes(200 * scale), 1),
        generated(f"one {25 * scale}k-record repo", [25_000 * scale], 2),
    ]
    if args.car_dir:
        sets.append(from_dir(args.car_dir))
    rows = [row for car_set in sets for row in measure(car_set, repeats)]
    print(
        f"{'set':<22} {'mode':<28} {'MB':>7} {'records':>9} {'cpu s':>7} {'MB/s':>7} "
        f"{'rec/s':>10} {'x decode':>8}"
    )
    for r in rows:
        print(
            f"{r.car_set:<22} {r.mode:<28} {r.mbytes:7.1f} {r.records:9d} {r.cpu_seconds:7.3f} "
            f"{r.mb_per_s:7.1f} {r.records_per_s:10,.0f} {r.ratio_to_decode_car:8.2f}"
        )
    if args.out:
        meta = {"python": sys.version.split()[0], "machine": platform.machine()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
