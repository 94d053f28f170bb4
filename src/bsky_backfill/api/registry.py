"""What the server remembers across restarts: named configs (every version kept) and the
jobs it started (where each job's own state lives).

Two tables, in the server's database (SQLite file by default, any URL ``store_url``
takes): ``api_configs`` (name, version, yaml, sha256, created_at, created_by) and
``api_jobs`` (job_id, config_name, config_version, state_path, started_at). A job's
progress and final state are in its own job store (``state_path``), as for ``run``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from bsky_backfill.state.sql.engine import StoreOptions, create_store_engine, store_url

__all__ = ["Registry", "StartedJob", "StoredConfig"]

_metadata = MetaData()
_configs = Table(
    "api_configs",
    _metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("yaml", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
)
_jobs = Table(
    "api_jobs",
    _metadata,
    Column("job_id", String(64), primary_key=True),
    Column("config_name", String(64)),
    Column("config_version", Integer),
    Column("state_path", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """One version of a named config."""

    name: str
    version: int
    yaml: str
    sha256: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class StartedJob:
    """A job the server started: its id, the config it came from, and its job store: a
    SQLite file path, or for a distributed job ``postgresql://...`` with ``#schema``."""

    job_id: str
    config_name: str | None
    config_version: int | None
    state_path: str
    started_at: datetime


class Registry:
    """Named configs and started jobs; see the module docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, target: str | Path) -> Registry:
        """Open (creating its tables if needed) the registry at a path or database URL."""
        engine = create_store_engine(store_url(target), StoreOptions())
        async with engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)
        return cls(engine)

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def save_config(self, name: str, yaml: str, created_by: str) -> StoredConfig:
        """Store ``yaml`` as the next version of ``name`` (1 for a new name)."""
        async with self._engine.begin() as conn:
            latest = await conn.scalar(
                select(func.max(_configs.c.version)).where(_configs.c.name == name)
            )
            stored = StoredConfig(
                name=name,
                version=(latest or 0) + 1,
                yaml=yaml,
                sha256=hashlib.sha256(yaml.encode()).hexdigest(),
                created_at=datetime.now(UTC),
                created_by=created_by,
            )
            await conn.execute(
                _configs.insert().values(
                    name=stored.name,
                    version=stored.version,
                    yaml=stored.yaml,
                    sha256=stored.sha256,
                    created_at=stored.created_at,
                    created_by=stored.created_by,
                )
            )
        return stored

    async def config(self, name: str, version: int | None = None) -> StoredConfig | None:
        """Version ``version`` of ``name`` (the latest when None), or None."""
        query = select(_configs).where(_configs.c.name == name)
        if version is not None:
            query = query.where(_configs.c.version == version)
        query = query.order_by(_configs.c.version.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _config(row) if row is not None else None

    async def configs(self) -> list[StoredConfig]:
        """The latest version of every named config, by name."""
        latest = (
            select(_configs.c.name, func.max(_configs.c.version).label("version"))
            .group_by(_configs.c.name)
            .subquery()
        )
        query = (
            select(_configs)
            .join(
                latest,
                (_configs.c.name == latest.c.name) & (_configs.c.version == latest.c.version),
            )
            .order_by(_configs.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_config(row) for row in rows]

    async def record_job(self, job: StartedJob) -> None:
        """Remember (or update) a job the server started."""
        values = {
            "config_name": job.config_name,
            "config_version": job.config_version,
            "state_path": job.state_path,
            "started_at": job.started_at,
        }
        async with self._engine.begin() as conn:
            await conn.execute(_jobs.delete().where(_jobs.c.job_id == job.job_id))
            await conn.execute(_jobs.insert().values(job_id=job.job_id, **values))

    async def jobs(self) -> list[StartedJob]:
        """Every job the server started, newest first."""
        async with self._engine.connect() as conn:
            rows = (
                (await conn.execute(select(_jobs).order_by(_jobs.c.started_at.desc())))
                .mappings()
                .all()
            )
        return [
            StartedJob(
                job_id=row["job_id"],
                config_name=row["config_name"],
                config_version=row["config_version"],
                state_path=row["state_path"],
                started_at=_utc(row["started_at"]),
            )
            for row in rows
        ]


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _config(row: RowMapping) -> StoredConfig:
    return StoredConfig(
        name=row["name"],
        version=row["version"],
        yaml=row["yaml"],
        sha256=row["sha256"],
        created_at=_utc(row["created_at"]),
        created_by=row["created_by"],
    )
