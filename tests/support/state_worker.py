"""A worker process for the job store's multi-process and crash tests.

``python -m tests.support.state_worker --url URL [--schema S] --job J MODE ...``

- ``claim --out FILE``: claim DIDs until none is left, appending each to FILE as it is
  claimed (one line each, flushed): two of these at once must never share a DID.
- ``run --sink DIR [--kill-at STEP:N]``: the exactly-once batch protocol against a toy
  sink in DIR, starting with recovery; ``--kill-at`` SIGKILLs the process itself at STEP
  of its Nth batch. Prints ``ready`` once recovered, before its first claim.

The toy sink stages a batch as ``staged/<batch>.json`` (written to a temporary name, then
renamed) and publishes it by renaming it into ``published/``: publishing is atomic and
idempotent, as the protocol asks of a sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.state import SqlJobStore, StoreOptions

__all__ = ["STEPS", "ToySink", "main", "reconcile", "records_for"]

STEPS = ("claimed", "batch_id", "staged", "committed", "published", "marked")


def records_for(did: str) -> int:
    """A fixed, DID-dependent record count, so the output can be checked exactly."""
    return sum(did.encode()) % 17


class ToySink:
    """Batches as JSON files: staged, then published by an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.staged_dir = root / "staged"
        self.published_dir = root / "published"
        self.staged_dir.mkdir(parents=True, exist_ok=True)
        self.published_dir.mkdir(parents=True, exist_ok=True)

    def stage(self, batch_id: str, rows: list[RepoRow]) -> None:
        tmp = self.staged_dir / f"{batch_id}.tmp"
        tmp.write_text(json.dumps({r.did: r.records for r in rows}))
        os.replace(tmp, self.staged_dir / f"{batch_id}.json")

    def publish(self, batch_id: str) -> None:
        staged = self.staged_dir / f"{batch_id}.json"
        if staged.exists():  # else published already: idempotent
            os.replace(staged, self.published_dir / f"{batch_id}.json")

    def staged(self) -> list[str]:
        for partial in self.staged_dir.glob("*.tmp"):  # a write cut short by a kill
            partial.unlink()
        return sorted(p.stem for p in self.staged_dir.glob("*.json"))

    def discard(self, batch_id: str) -> None:
        (self.staged_dir / f"{batch_id}.json").unlink(missing_ok=True)

    def published(self) -> dict[str, dict[str, int]]:
        return {p.stem: json.loads(p.read_text()) for p in self.published_dir.glob("*.json")}


async def reconcile(store: SqlJobStore, job_id: str, sink: ToySink) -> None:
    """The restart half of the protocol: recover, then publish or discard staged batches."""
    recovery = await store.recover(job_id)
    unpublished = set(recovery.committed_unpublished)
    for batch_id in sink.staged():
        if batch_id in unpublished:
            sink.publish(batch_id)
        elif batch_id not in recovery.known_batches:
            sink.discard(batch_id)
    for batch_id in recovery.committed_unpublished:
        sink.publish(batch_id)  # no-op if it was published before the crash
        await store.mark_published(job_id, batch_id)


def _maybe_kill(kill_at: tuple[str, int] | None, step: str, batch_number: int) -> None:
    if kill_at == (step, batch_number):
        os.kill(os.getpid(), signal.SIGKILL)


async def _run(store: SqlJobStore, args: argparse.Namespace) -> None:
    sink = ToySink(Path(args.sink))
    await reconcile(store, args.job, sink)
    print("ready", flush=True)  # the crash test times its random kills from here
    kill_at = None
    if args.kill_at:
        step, number = args.kill_at.split(":")
        kill_at = (step, int(number))
    batch_number = 0
    while claims := await store.claim(args.job, args.batch, worker_id=args.worker):
        batch_number += 1
        _maybe_kill(kill_at, "claimed", batch_number)
        rows = [
            RepoRow(c.did, DidState.COMPLETE, rev="3laaaaaaaaa22", records=records_for(c.did))
            for c in claims
        ]
        batch_id = await store.next_batch_id(args.job, worker_id=args.worker)
        _maybe_kill(kill_at, "batch_id", batch_number)
        sink.stage(batch_id, rows)
        _maybe_kill(kill_at, "staged", batch_number)
        await store.commit_batch(args.job, batch_id, rows)
        _maybe_kill(kill_at, "committed", batch_number)
        sink.publish(batch_id)
        _maybe_kill(kill_at, "published", batch_number)
        await store.mark_published(args.job, batch_id)
        _maybe_kill(kill_at, "marked", batch_number)
        await asyncio.sleep(args.pause)


async def _claim(store: SqlJobStore, args: argparse.Namespace) -> None:
    # Plain file writes on purpose: the line must be on disk before the next claim.
    with open(args.out, "a") as out:  # noqa: ASYNC230
        while claims := await store.claim(args.job, args.batch, worker_id=args.worker):
            out.write("".join(f"{c.did}\n" for c in claims))
            out.flush()
            await asyncio.sleep(args.pause)


async def _main(args: argparse.Namespace) -> None:
    store = await SqlJobStore.open(args.url, StoreOptions(schema=args.schema))
    try:
        await (_run if args.mode == "run" else _claim)(store, args)
    finally:
        await store.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["claim", "run"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema")
    parser.add_argument("--job", required=True)
    parser.add_argument("--worker", default=f"pid-{os.getpid()}")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--out")
    parser.add_argument("--sink")
    parser.add_argument("--kill-at")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
