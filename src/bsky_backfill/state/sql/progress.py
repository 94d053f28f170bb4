"""Read-only views of a job: counts by state, per host, records kept, stored outcomes.

Each function runs in the caller's (read-only) transaction; ``job`` is the surrogate key.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bsky_backfill.core.models import FINAL_STATES, DidState, RepoRow
from bsky_backfill.state.sql.schema import dids

__all__ = ["counts", "host_counts", "records_total", "repos_page"]

_FINAL: Final = tuple(sorted(s.value for s in FINAL_STATES))


async def counts(conn: AsyncConnection, job: int) -> dict[DidState, int]:
    """See ``JobProgress.counts``."""
    query = select(dids.c.state, func.count()).where(dids.c.job == job).group_by(dids.c.state)
    result = dict.fromkeys(DidState, 0)
    for state, count in await conn.execute(query):
        result[DidState(state)] = count
    return result


async def records_total(conn: AsyncConnection, job: int) -> int:
    """See ``JobProgress.records_total``."""
    total = await conn.scalar(
        select(func.coalesce(func.sum(dids.c.records), 0)).where(
            dids.c.job == job, dids.c.state == DidState.COMPLETE.value
        )
    )
    return int(total or 0)


async def host_counts(conn: AsyncConnection, job: int) -> dict[str | None, dict[DidState, int]]:
    """See ``JobProgress.host_counts``."""
    query = (
        select(dids.c.host, dids.c.state, func.count())
        .where(dids.c.job == job)
        .group_by(dids.c.host, dids.c.state)
    )
    result: dict[str | None, dict[DidState, int]] = {}
    for host, state, count in await conn.execute(query):
        result.setdefault(host, {})[DidState(state)] = count
    return result


async def repos_page(
    conn: AsyncConnection, job: int, after: str | None, limit: int, unbatched: bool
) -> list[RepoRow]:
    """Up to ``limit`` final DIDs' outcomes after ``after``, in DID order."""
    query = (
        select(
            dids.c.did,
            dids.c.state,
            dids.c.handle,
            dids.c.pds,
            dids.c.rev,
            dids.c.commit_cid,
            dids.c.verified,
            dids.c.records,
            dids.c.records_by_collection,
            dids.c.bytes,
            dids.c.error,
            dids.c.fetched_at,
        )
        .where(dids.c.job == job, dids.c.state.in_(_FINAL))
        .order_by(dids.c.did)
        .limit(limit)
    )
    if after is not None:
        query = query.where(dids.c.did > after)
    if unbatched:
        query = query.where(dids.c.batch.is_(None))
    return [_repo(row) for row in await conn.execute(query)]


def _repo(row: Row[*tuple[Any, ...]]) -> RepoRow:
    return RepoRow(
        did=row.did,
        status=DidState(row.state),
        handle=row.handle,
        pds=row.pds,
        rev=row.rev,
        commit_cid=row.commit_cid,
        verified=row.verified,
        records=row.records,
        records_by_collection=dict(row.records_by_collection or {}),
        bytes=row.bytes,
        error=row.error,
        fetched_at=row.fetched_at,
    )
