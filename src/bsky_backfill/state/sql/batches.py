"""The batch protocol's SQL (see ``bsky_backfill.state.protocol``): issue, commit, publish,
recover. Each function runs in the caller's transaction; ``commit_batch`` relies on it
being one transaction, so either every DID of the batch is final or none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Row, String, and_, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bsky_backfill.core.models import FINAL_STATES, DidState, RepoRow
from bsky_backfill.errors import BatchRejected
from bsky_backfill.state.model import BatchState, Recovery, format_batch_id, host_of
from bsky_backfill.state.sql._util import IN_CHUNK, chunked
from bsky_backfill.state.sql.schema import batches, dids, jobs

__all__ = [
    "check_rows",
    "commit_batch",
    "mark_published",
    "next_batch",
    "recover",
    "superseded",
    "unpublished",
]

_FINAL: Final = tuple(sorted(s.value for s in FINAL_STATES))
_SHOWN: Final = 5  # DIDs named in a rejection message


def check_rows(rows: Sequence[RepoRow]) -> None:
    """Raise ``ValueError`` for a non-final status or a DID given twice (checked before any
    transaction: these are the caller's bugs, not the store's)."""
    seen: set[str] = set()
    for row in rows:
        if DidState(row.status) not in FINAL_STATES:
            raise ValueError(f"{row.did}: status {row.status} is not final")
        if row.did in seen:
            raise ValueError(f"{row.did} appears twice in one batch")
        seen.add(row.did)


async def next_batch(conn: AsyncConnection, job: int, worker_id: str, now: datetime) -> int:
    """Issue the job's next batch number (row-locking the job on PostgreSQL for the
    increment, so concurrent workers get distinct, increasing numbers)."""
    seq = await conn.scalar(
        jobs.update()
        .where(jobs.c.key == job)
        .values(batch_seq=jobs.c.batch_seq + 1)
        .returning(jobs.c.batch_seq)
    )
    assert seq is not None  # the caller resolved ``job`` in this transaction
    await conn.execute(
        batches.insert().values(
            job=job, seq=seq, state=BatchState.OPEN.value, worker_id=worker_id, opened_at=now
        )
    )
    return int(seq)


async def commit_batch(
    conn: AsyncConnection,
    job: int,
    job_id: str,
    seq: int,
    rows: Sequence[RepoRow],
    now: datetime,
) -> None:
    """See ``BatchLedger.commit_batch``; ``rows`` already passed :func:`check_rows`."""
    batch_id = format_batch_id(seq)
    batch = await _lock_batch(conn, job, seq)
    if batch is None:
        raise BatchRejected(f"batch {batch_id} was never issued", job_id=job_id, batch_id=batch_id)
    state = BatchState(batch.state)
    if state in (BatchState.COMMITTED, BatchState.PUBLISHED):
        if await _is_same_commit(conn, job, seq, batch.dids, rows):
            return
        raise BatchRejected(
            f"batch {batch_id} is already committed with other DIDs",
            job_id=job_id,
            batch_id=batch_id,
        )
    if state is BatchState.ABANDONED:
        raise BatchRejected(
            f"batch {batch_id} was abandoned by a recovery", job_id=job_id, batch_id=batch_id
        )
    missing = await _not_held(conn, job, batch.worker_id, [r.did for r in rows])
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (" ..." if len(missing) > _SHOWN else "")
        raise BatchRejected(
            f"batch {batch_id}: {len(missing)} DIDs are not held by worker "
            f"{batch.worker_id!r}: {shown}",
            job_id=job_id,
            batch_id=batch_id,
        )
    if rows:
        await conn.execute(_outcome_update(job), [_outcome(row, seq) for row in rows])
    await conn.execute(
        batches.update()
        .where(batches.c.job == job, batches.c.seq == seq)
        .values(
            state=BatchState.COMMITTED.value,
            committed_at=now,
            dids=len(rows),
            records=sum(row.records for row in rows),
        )
    )


async def mark_published(
    conn: AsyncConnection, job: int, job_id: str, seq: int, now: datetime
) -> None:
    """See ``BatchLedger.mark_published``."""
    batch_id = format_batch_id(seq)
    batch = await _lock_batch(conn, job, seq)
    if batch is None or BatchState(batch.state) in (BatchState.OPEN, BatchState.ABANDONED):
        raise BatchRejected(
            f"batch {batch_id} cannot be published: it was never committed",
            job_id=job_id,
            batch_id=batch_id,
        )
    if batch.state == BatchState.COMMITTED.value:
        await conn.execute(
            batches.update()
            .where(batches.c.job == job, batches.c.seq == seq)
            .values(state=BatchState.PUBLISHED.value, published_at=now)
        )


async def superseded(conn: AsyncConnection, job: int, seq: int) -> dict[str, str]:
    """See ``BatchLedger.superseded``."""
    query = select(dids.c.did, dids.c.superseded_batch).where(
        dids.c.job == job, dids.c.batch == seq, dids.c.superseded_batch.is_not(None)
    )
    return {did: format_batch_id(old) for did, old in await conn.execute(query)}


async def recover(conn: AsyncConnection, job: int, worker_id: str | None = None) -> Recovery:
    """See ``BatchLedger.recover``. Attempts are kept: see the protocol's docstring.
    With ``worker_id``, only that worker's claims and open batches."""
    held = [dids.c.job == job, dids.c.state == DidState.IN_PROGRESS.value]
    opened = [batches.c.job == job, batches.c.state == BatchState.OPEN.value]
    if worker_id is not None:
        held.append(dids.c.worker_id == worker_id)
        opened.append(batches.c.worker_id == worker_id)
    released = await conn.execute(
        dids.update()
        .where(*held)
        .values(state=DidState.PENDING.value, worker_id=None, claimed_at=None)
    )
    abandoned = await conn.scalars(
        batches.update()
        .where(*opened)
        .values(state=BatchState.ABANDONED.value)
        .returning(batches.c.seq)
    )
    abandoned_ids = tuple(format_batch_id(seq) for seq in sorted(abandoned.all()))
    kept = await conn.execute(
        select(batches.c.seq, batches.c.state).where(
            batches.c.job == job,
            batches.c.state.in_([BatchState.COMMITTED.value, BatchState.PUBLISHED.value]),
        )
    )
    known: set[str] = set()
    unpublished: list[int] = []
    for seq, state in kept:
        known.add(format_batch_id(seq))
        if state == BatchState.COMMITTED.value:
            unpublished.append(seq)
    return Recovery(
        committed_unpublished=tuple(format_batch_id(seq) for seq in sorted(unpublished)),
        known_batches=frozenset(known),
        abandoned=abandoned_ids,
        released=released.rowcount,
    )


async def unpublished(conn: AsyncConnection, job: int) -> list[str]:
    """See ``BatchLedger.unpublished``."""
    seqs = await conn.scalars(
        select(batches.c.seq)
        .where(batches.c.job == job, batches.c.state == BatchState.COMMITTED.value)
        .order_by(batches.c.seq)
    )
    return [format_batch_id(seq) for seq in seqs]


async def _lock_batch(conn: AsyncConnection, job: int, seq: int) -> Row[*tuple[Any, ...]] | None:
    """The batch row, locked until the transaction ends (PostgreSQL; SQLite's write lock is
    already held): a concurrent recover cannot abandon it mid-commit."""
    query = (
        select(batches.c.state, batches.c.worker_id, batches.c.dids)
        .where(batches.c.job == job, batches.c.seq == seq)
        .with_for_update()
    )
    return (await conn.execute(query)).first()


async def _is_same_commit(
    conn: AsyncConnection, job: int, seq: int, count: int, rows: Sequence[RepoRow]
) -> bool:
    """Whether a committed batch holds exactly ``rows``' DIDs (a repeated commit)."""
    if count != len(rows):
        return False
    found = 0
    for chunk in chunked((row.did for row in rows), IN_CHUNK):
        found += (
            await conn.scalar(
                select(func.count()).where(
                    dids.c.job == job, dids.c.batch == seq, dids.c.did.in_(chunk)
                )
            )
            or 0
        )
    return found == count


async def _not_held(
    conn: AsyncConnection, job: int, worker_id: str, wanted: list[str]
) -> list[str]:
    """The DIDs of ``wanted`` that this batch may not commit: neither in progress for its
    worker nor final without a batch. The rows that may are locked (PostgreSQL) so that
    nothing changes them before the transaction ends."""
    held: set[str] = set()
    may_commit = or_(
        and_(dids.c.state == DidState.IN_PROGRESS.value, dids.c.worker_id == worker_id),
        and_(dids.c.state.in_(_FINAL), dids.c.batch.is_(None)),
    )
    for chunk in chunked(wanted, IN_CHUNK):
        query = (
            select(dids.c.did)
            .where(dids.c.job == job, dids.c.did.in_(chunk), may_commit)
            .with_for_update()
        )
        held.update((await conn.scalars(query)).all())
    return sorted(did for did in wanted if did not in held)


def _outcome_update(job: int) -> Any:
    """One UPDATE, run with a parameter set per DID. ``host`` keeps the stored value when
    the row names no PDS (it is scheduling data, not output); ``error_kind`` (the last
    error's class) is kept for a DID that did not complete."""
    return (
        dids.update()
        .where(dids.c.job == job, dids.c.did == bindparam("b_did"))
        .values(
            state=bindparam("b_state", type_=String()),
            handle=bindparam("b_handle"),
            pds=bindparam("b_pds"),
            host=func.coalesce(bindparam("b_host", type_=String()), dids.c.host),
            rev=bindparam("b_rev"),
            commit_cid=bindparam("b_commit_cid"),
            verified=bindparam("b_verified"),
            records=bindparam("b_records"),
            records_by_collection=bindparam(
                "b_by_collection", type_=dids.c.records_by_collection.type
            ),
            bytes=bindparam("b_bytes"),
            error=bindparam("b_error"),
            error_kind=case(
                (bindparam("b_state", type_=String()) == DidState.COMPLETE.value, None),
                else_=dids.c.error_kind,
            ),
            fetched_at=bindparam("b_fetched_at", type_=dids.c.fetched_at.type),
            batch=bindparam("b_batch"),
            worker_id=None,
            claimed_at=None,
            not_before=None,
        )
    )


def _outcome(row: RepoRow, seq: int) -> dict[str, Any]:
    return {
        "b_did": row.did,
        "b_state": DidState(row.status).value,
        "b_handle": row.handle,
        "b_pds": row.pds,
        "b_host": host_of(row.pds) if row.pds else None,
        "b_rev": row.rev,
        "b_commit_cid": row.commit_cid,
        "b_verified": row.verified,
        "b_records": row.records,
        "b_by_collection": dict(row.records_by_collection),
        "b_bytes": row.bytes,
        "b_error": row.error,
        "b_fetched_at": row.fetched_at,
        "b_batch": seq,
    }
