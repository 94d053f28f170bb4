"""One DID's trip: fetch its repo from its PDS, verify and read it, select its rows.

:func:`process_did` never raises for anything the network or the repo can do; it
returns an :class:`Outcome` the manager acts on:
- ``Done``: the DID's final result (``complete`` with rows, or an unavailable status);
- ``Retry``: try again later; ``counts_attempt`` is False for rate limits, which pause
  the host and never use up ``max_retries``;
- ``Failed``: a permanent problem with this repo (corrupt, forged, too large).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Final

from bsky_backfill.atproto.car import CarLimits
from bsky_backfill.atproto.identity import Identity
from bsky_backfill.atproto.repo import Verify, read_repo
from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.core.limits import HostLimiter
from bsky_backfill.core.models import DidState, RecordRow, RepoResult, RepoRow
from bsky_backfill.core.select import Selection, SelectionCounts, iter_rows
from bsky_backfill.core.spill import SPILL_ROWS, SpilledRows
from bsky_backfill.errors import (
    BackfillError,
    PermanentError,
    RateLimited,
    RepoTooLarge,
    RepoUnavailable,
    RetryableError,
)

__all__ = [
    "READ_IN_MEMORY_BYTES",
    "Done",
    "Failed",
    "Outcome",
    "Retry",
    "WorkerOptions",
    "process_did",
    "unavailable",
]

_GET_REPO = "com.atproto.sync.getRepo"

READ_IN_MEMORY_BYTES: Final = 64 * 1024**2
"""A repo spooled to a file (over ``XrpcOptions.spool_threshold``: downloads are many at a
time) but no larger than this is loaded whole before it is read (repos are read one at a
time): the C reader wants the CAR in memory, and is ~2.4x faster than the Python reader
reading the file by offsets (60k records: 0.38 vs 0.89 s CPU, ``bench_spooled``). Larger
repos are read from the file, so memory stays bounded whatever a repo's size."""
_collection = attrgetter("collection")  # map() with it counts at C speed


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What to keep and how hard to check, for every DID of a job."""

    job_id: str
    selection: Selection = Selection()
    verify: Verify = "full"
    max_repo_bytes: int = 2 * 1024**3
    spool_dir: Path | None = None
    read_in_memory_bytes: int = READ_IN_MEMORY_BYTES


@dataclass(frozen=True, slots=True)
class Done:
    result: RepoResult


@dataclass(frozen=True, slots=True)
class Retry:
    error: BackfillError
    counts_attempt: bool = True


@dataclass(frozen=True, slots=True)
class Failed:
    error: BackfillError


Outcome = Done | Retry | Failed


def _kind(error: BaseException) -> str:
    return type(error).__name__


def _read(
    content: bytes | Path, identity: Identity, options: WorkerOptions, fetched_at: datetime
) -> RepoResult:
    """Verify and read a downloaded repo and select its rows (CPU-bound: run in a thread)."""
    if isinstance(content, Path) and content.stat().st_size <= options.read_in_memory_bytes:
        content = content.read_bytes()
    key = identity.signing_key.public_key().did_key if options.verify == "full" else None
    collections = options.selection.collections
    limits = CarLimits(max_total_bytes=options.max_repo_bytes)
    counts = SelectionCounts()
    with read_repo(
        content,
        signing_key=key,
        did=identity.did,
        collections=collections,
        verify=options.verify,
        limits=limits,
    ) as repo:
        rows = iter_rows(
            repo,
            repo.record_parts(),
            options.selection,
            pds=identity.pds,
            job_id=options.job_id,
            fetched_at=fetched_at,
            counts=counts,
        )
        kept, by_collection = _keep(rows, options.spool_dir)
        size = repo.size
    row = RepoRow(
        did=identity.did,
        status=DidState.COMPLETE,
        handle=identity.handle,
        pds=identity.pds,
        rev=repo.rev,
        commit_cid=repo.commit_cid,
        verified=options.verify,
        records=len(kept),
        records_by_collection=dict(sorted(by_collection.items())),
        bytes=size,
        fetched_at=fetched_at,
    )
    return RepoResult(row, kept)


def _keep(
    rows: Iterator[RecordRow], spool_dir: Path | None
) -> tuple[tuple[RecordRow, ...] | SpilledRows, Counter[str]]:
    """The rows in memory, or spilled to disk in chunks once there are ``SPILL_ROWS``
    (memory bounded whatever the repo's size), and their count per collection."""
    first = list(islice(rows, SPILL_ROWS))
    by_collection = Counter(map(_collection, first))
    if len(first) < SPILL_ROWS:
        return tuple(first), by_collection
    spilled = SpilledRows(spool_dir)
    try:
        chunk = first
        while chunk:
            spilled.append(chunk)
            chunk = list(islice(rows, SPILL_ROWS))
            by_collection.update(map(_collection, chunk))
    except BaseException:
        spilled.close()
        raise
    return spilled, by_collection


def unavailable(identity: Identity, error: RepoUnavailable, fetched_at: datetime) -> RepoResult:
    """The result of a DID whose PDS says it has no readable repo."""
    row = RepoRow(
        did=identity.did,
        status=DidState(error.status),
        handle=identity.handle,
        pds=identity.pds,
        error=f"{_kind(error)}: {error.message}",
        fetched_at=fetched_at,
    )
    return RepoResult(row)


async def process_did(
    identity: Identity,
    *,
    client: XrpcClient,
    limiter: HostLimiter,
    options: WorkerOptions,
    reader: Executor | None = None,
) -> Outcome:
    """Fetch, verify and select one DID's repo; see the module docstring for outcomes.

    ``reader``: the executor that reads repos (default: the event loop's).
    """
    fetched_at = datetime.now(UTC)
    try:
        async with limiter.slot():
            body = await client.get_body(
                identity.pds,
                _GET_REPO,
                {"did": identity.did},
                max_bytes=options.max_repo_bytes,
                spool_dir=options.spool_dir,
                too_large=RepoTooLarge,
            )
    except RateLimited as exc:
        limiter.rate_limited(exc.retry_after, exc.remaining, exc.reset_at)
        return Retry(exc, counts_attempt=False)
    except RepoUnavailable as exc:
        return Done(unavailable(identity, exc, fetched_at))
    except RetryableError as exc:
        return Retry(exc)
    except PermanentError as exc:
        return Failed(exc)
    limiter.observe(body.rate_limit)
    with body:
        try:
            read = partial(_read, body.content, identity, options, fetched_at)
            result = await asyncio.get_running_loop().run_in_executor(reader, read)
        except RetryableError as exc:
            return Retry(exc)
        except PermanentError as exc:
            return Failed(exc)
    return Done(result)
