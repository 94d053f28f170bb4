"""The store's schema comes from Alembic migrations: a fresh store is at head, head is
exactly ``schema.metadata`` (on SQLite and PostgreSQL), a store made by the old
``create_all`` path is stamped, concurrent openers do not race, and a revision from a newer
version is refused by name."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bsky_backfill.errors import StoreError
from bsky_backfill.state import StoreOptions
from bsky_backfill.state.migrations import BASELINE
from bsky_backfill.state.migrations.__main__ import new_revision
from bsky_backfill.state.migrations.runner import (
    SCRIPTS,
    alembic_config,
    migration_options,
    upgrade_to_head,
)
from bsky_backfill.state.sql.engine import create_store_engine, store_url
from bsky_backfill.state.sql.schema import SCHEMA_VERSION, metadata, store_meta
from tests.support import REPO_ROOT
from tests.support.postgres import fresh_schema
from tests.unit.state.conftest import Backend, sqlite_url

T = TypeVar("T")

HEAD = ScriptDirectory(str(SCRIPTS)).get_current_head()


@asynccontextmanager
async def connection(backend: Backend) -> AsyncIterator[AsyncConnection]:
    """A transaction on ``backend``'s database, outside any store, committed on exit."""
    engine = create_store_engine(store_url(backend.url), backend.options)
    try:
        async with engine.begin() as conn:
            if backend.options.schema is not None:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{backend.options.schema}"'))
            yield conn
    finally:
        await engine.dispose()


async def run(backend: Backend, fn: Callable[[Connection], T]) -> T:
    """``fn`` on a sync connection to ``backend`` whose default schema is the store's:
    Alembic's autogenerate and the inspector look there, so the helpers pass schema None."""
    async with connection(backend) as conn:
        if backend.options.schema is not None:
            await conn.execute(text(f'SET LOCAL search_path TO "{backend.options.schema}"'))
        return await conn.run_sync(fn)


def current_revisions(conn: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(conn, opts=migration_options(None)).get_current_heads()


def differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={**migration_options(None), "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def check_constraints(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    inspector = inspect(conn)
    return {table: inspector.get_check_constraints(table) for table in metadata.tables}


async def create_all_store(backend: Backend) -> None:
    """A store as ``ensure_schema`` made it before Alembic: ``create_all`` and the
    ``schema_version`` row, no ``alembic_version``."""
    async with connection(backend) as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            store_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
        )


@asynccontextmanager
async def sibling(backend: Backend, tmp_path: Path) -> AsyncIterator[Backend]:
    """A second, empty database on ``backend``'s server (another file or schema)."""
    if backend.options.schema is None:
        yield replace(backend, url=sqlite_url(tmp_path / "sibling.db"))
        return
    async with fresh_schema() as schema:
        yield replace(backend, options=StoreOptions(schema=schema))


async def test_a_fresh_store_is_at_head(backend: Backend) -> None:
    async with await backend.open():
        pass
    assert HEAD is not None
    assert await run(backend, current_revisions) == (HEAD,)


async def test_head_is_exactly_the_metadata(backend: Backend) -> None:
    async with await backend.open():
        pass
    assert await run(backend, differences) == []


async def test_head_has_the_check_constraints_of_create_all(
    backend: Backend, tmp_path: Path
) -> None:
    async with await backend.open():
        pass
    async with sibling(backend, tmp_path) as old:
        await create_all_store(old)
        expected = await run(old, check_constraints)
    assert await run(backend, check_constraints) == expected
    assert all(expected.get(table) for table in ("jobs", "dids", "batches"))


def test_the_baseline_is_the_first_revision() -> None:
    assert ScriptDirectory(str(SCRIPTS)).get_base() == BASELINE


async def test_a_create_all_store_is_stamped_not_recreated(backend: Backend) -> None:
    await create_all_store(backend)
    async with connection(backend) as conn:
        await conn.execute(store_meta.insert().values(key="marker", value="kept"))
    async with await backend.open() as store:
        await store.create_job("j", "n", "", "h")
        assert await store.add_dids("j", ["did:plc:a"]) == 1
    assert await run(backend, current_revisions) == (HEAD,)
    async with connection(backend) as conn:
        marker = await conn.scalar(select(store_meta.c.value).where(store_meta.c.key == "marker"))
    assert marker == "kept"


async def test_concurrent_opens_of_a_fresh_store_succeed(backend: Backend) -> None:
    async def open_and_use(i: int) -> None:
        async with await backend.open() as store:
            await store.create_job(f"job-{i}", "n", "", "h")

    async with asyncio.TaskGroup() as group:
        for i in range(4):
            group.create_task(open_and_use(i))
    async with await backend.open() as store:
        assert len(await store.list_jobs()) == 4
    assert await run(backend, current_revisions) == (HEAD,)


async def test_concurrent_processes_open_a_fresh_store(backend: Backend) -> None:
    code = (
        "import asyncio, sys\n"
        "from bsky_backfill.state import SqlJobStore, StoreOptions\n"
        "async def main():\n"
        "    schema = sys.argv[2] if len(sys.argv) > 2 else None\n"
        "    store = await SqlJobStore.open(sys.argv[1], StoreOptions(schema=schema))\n"
        "    await store.aclose()\n"
        "asyncio.run(main())\n"
    )
    schema = [backend.options.schema] if backend.options.schema else []
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, backend.url, *schema, cwd=REPO_ROOT
        )
        for _ in range(4)
    ]
    assert [await child.wait() for child in children] == [0, 0, 0, 0]
    assert await run(backend, current_revisions) == (HEAD,)
    assert await run(backend, differences) == []


async def test_an_unknown_revision_is_refused_by_name(backend: Backend) -> None:
    async with await backend.open():
        pass
    async with connection(backend) as conn:
        schema = f'"{backend.options.schema}".' if backend.options.schema else ""
        await conn.execute(text(f"UPDATE {schema}alembic_version SET version_num = 'f00dface'"))
    with pytest.raises(StoreError, match="revision f00dface"):
        await backend.open()
    assert await run(backend, current_revisions) == ("f00dface",)


async def test_downgrade_to_base_removes_every_table(backend: Backend) -> None:
    async with await backend.open():
        pass

    def downgrade(conn: Connection) -> list[str]:
        command.downgrade(alembic_config(conn, None), "base")
        return inspect(conn).get_table_names()

    assert await run(backend, downgrade) == ["alembic_version"]


LATER_REVISION = f"""
import sqlalchemy as sa
from alembic import op

revision = "later"
down_revision = {HEAD!r}


def upgrade() -> None:
    op.add_column("dids", sa.Column("priority", sa.Integer()))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String()))
    op.create_index("ix_dids_priority", "dids", ["priority"])
"""


async def test_a_later_revision_alters_the_stores_own_tables(
    backend: Backend, tmp_path: Path
) -> None:
    async with await backend.open():
        pass
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "later.py").write_text(LATER_REVISION)
    async with connection(backend) as conn:
        await conn.run_sync(upgrade_to_head, backend.options.schema, scripts)

    def columns(conn: Connection) -> dict[str, set[str]]:
        inspector = inspect(conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in ("dids", "jobs")}

    found = await run(backend, columns)
    assert "priority" in found["dids"]
    assert "owner" in found["jobs"]


def test_new_revision_after_head_has_no_steps(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    path = new_revision("nothing changed", scripts=scripts)
    count = sum(1 for _ in ScriptDirectory(str(SCRIPTS)).walk_revisions())
    assert path == scripts / "versions" / f"{count + 1:04d}_nothing_changed.py"
    source = path.read_text()
    assert f"down_revision = {HEAD!r}" in source
    assert "op." not in source  # autogenerate found no difference between head and metadata


def test_the_helper_has_help_with_an_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bsky_backfill.state.migrations", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    assert "example: python -m bsky_backfill.state.migrations" in result.stdout
