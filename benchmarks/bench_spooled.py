"""A large repo downloaded to a file: the worker's read from the file vs read into memory.

Usage: python -m benchmarks.bench_spooled [--quick] [--records N] [--repeats N]
                                          [--out results.json]

A repo over ``XrpcOptions.spool_threshold`` (16 MB) is downloaded to a temporary file.
The worker reads one up to ``core.worker.READ_IN_MEMORY_BYTES`` (64 MB) into memory,
where the C reader applies, and a larger one by offsets into the file (the Python
reader). This times both on one signed repo of ``--records`` records (default 60,000:
~20 MB), ``verify: full``, every record kept as a row, in CPU seconds of this process
(best of ``--repeats``), the collector as ``bsky-backfill`` sets it. ``--quick``: 20,000
records.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.support.repos import DID, KEY, make_repo

from benchmarks.bench_pipeline import best
from benchmarks.machine import RESULTS, save
from bsky_backfill.atproto.identity import Identity, SigningKey
from bsky_backfill.core import worker
from bsky_backfill.process import tune_process

NOW = datetime.now(UTC)


def read_cpu(path: Path, limit: int, repeats: int) -> tuple[float, int]:
    """The least CPU seconds of the worker's read of ``path`` with ``limit`` as
    ``read_in_memory_bytes``, and the rows it made."""
    key = SigningKey("multikey", KEY.public_key.multikey)
    identity = Identity(DID, "https://pds.example", key, None)
    options = worker.WorkerOptions(job_id="bench", read_in_memory_bytes=limit)
    seconds, result = best(repeats, lambda: worker._read(path, identity, options, NOW))
    result.close()
    return seconds, result.repo.records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 records")
    parser.add_argument("--records", type=int, default=None, help="default 60,000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "spooled.json")
    args = parser.parse_args(argv)
    records = args.records or (20_000 if args.quick else 60_000)
    tune_process()
    with tempfile.TemporaryDirectory(prefix="bench-spooled-") as folder:
        path = Path(folder) / "repo.car"
        path.write_bytes(make_repo(records).car)
        size = path.stat().st_size
        file_s, rows = read_cpu(path, 0, args.repeats)
        memory_s, same = read_cpu(path, size, args.repeats)
    assert rows == same == records, (rows, same)
    figures = {
        "records": rows,
        "mb": round(size / 1e6, 1),
        "from_file_s": round(file_s, 3),
        "in_memory_s": round(memory_s, 3),
        "speedup": round(file_s / memory_s, 2),
    }
    print(
        f"{rows:,} records, {figures['mb']} MB: from the file {file_s:.2f} s, read into memory "
        f"{memory_s:.2f} s CPU -> {figures['speedup']}x"
    )
    save(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
