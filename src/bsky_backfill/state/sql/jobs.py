"""Job rows: create, read, list, change state. Each function runs in the caller's
transaction (``conn``) and raises the project's errors, never SQLAlchemy's own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bsky_backfill.errors import JobNotFound, StoreError
from bsky_backfill.state.model import Job, JobState
from bsky_backfill.state.sql._util import dialect_insert
from bsky_backfill.state.sql.schema import jobs

__all__ = ["create_job", "get_job", "job_key", "list_jobs", "set_job_state"]

_FINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
_COLUMNS = (
    jobs.c.job_id,
    jobs.c.name,
    jobs.c.config_text,
    jobs.c.config_hash,
    jobs.c.state,
    jobs.c.error,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
)


async def job_key(conn: AsyncConnection, job_id: str) -> int:
    """The job's surrogate key; raises ``JobNotFound``."""
    key = await conn.scalar(select(jobs.c.key).where(jobs.c.job_id == job_id))
    if key is None:
        raise JobNotFound(f"no job {job_id!r} in the state store", job_id=job_id)
    return int(key)


async def create_job(
    conn: AsyncConnection, job_id: str, name: str, config_text: str, config_hash: str, now: datetime
) -> Job:
    """See ``JobCatalog.create_job``. Race-free: of two creators, one inserts and both
    then read the same row."""
    values: dict[str, Any] = {
        "job_id": job_id,
        "name": name,
        "config_text": config_text,
        "config_hash": config_hash,
        "state": JobState.PENDING.value,
        "created_at": now,
    }
    insert = dialect_insert(conn, jobs).values(**values)
    await conn.execute(insert.on_conflict_do_nothing(index_elements=[jobs.c.job_id]))
    job = await get_job(conn, job_id)
    assert job is not None  # inserted above, or already there
    if job.config_hash != config_hash:
        raise StoreError(
            f"job {job_id!r} exists with another config (hash {job.config_hash})", job_id=job_id
        )
    return job


async def get_job(conn: AsyncConnection, job_id: str) -> Job | None:
    """See ``JobCatalog.get_job``."""
    row = (await conn.execute(select(*_COLUMNS).where(jobs.c.job_id == job_id))).first()
    return None if row is None else _job(row)


async def list_jobs(conn: AsyncConnection) -> list[Job]:
    """See ``JobCatalog.list_jobs``."""
    rows = await conn.execute(select(*_COLUMNS).order_by(jobs.c.created_at, jobs.c.key))
    return [_job(row) for row in rows]


async def set_job_state(
    conn: AsyncConnection, job_id: str, state: JobState, error: str | None, now: datetime
) -> Job:
    """See ``JobCatalog.set_job_state``."""
    state = JobState(state)
    job = await get_job(conn, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r} in the state store", job_id=job_id)
    values: dict[str, Any] = {"state": state.value, "error": error}
    if state is JobState.RUNNING:
        if job.state in _FINAL:  # a re-run: a new run with its own times
            values |= {"started_at": now, "finished_at": None}
        elif job.started_at is None:
            values["started_at"] = now
    elif state in _FINAL and job.state is not state:
        values["finished_at"] = now
    await conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(**values))
    return await get_job(conn, job_id) or job


def _job(row: Row[*tuple[Any, ...]]) -> Job:
    return Job(
        job_id=row.job_id,
        name=row.name,
        config_text=row.config_text,
        config_hash=row.config_hash,
        state=JobState(row.state),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
