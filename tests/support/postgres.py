"""PostgreSQL for tests: the server on 127.0.0.1:5432 (database ``test``, trust auth) that
runs on every machine here and in CI. Each test gets a schema of its own, dropped after."""

from __future__ import annotations

import importlib.util
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

__all__ = ["drop_schema", "fresh_schema", "postgres_problem", "postgres_url"]


def postgres_url() -> str:
    """The test server's URL; ``BSKY_BACKFILL_TEST_POSTGRES`` overrides it."""
    return os.environ.get(
        "BSKY_BACKFILL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
    )


def postgres_problem() -> str | None:
    """Why PostgreSQL tests cannot run here (driver missing, server unreachable), or None."""
    if importlib.util.find_spec("asyncpg") is None:
        return "the asyncpg driver (pip install asyncpg)"
    parts = urlsplit(postgres_url())
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return None
    except OSError:
        return f"a PostgreSQL server at {parts.hostname}:{parts.port or 5432}"


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A new, empty schema name; the schema and everything in it is dropped on exit."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        await drop_schema(name)


async def drop_schema(name: str) -> None:
    """Drop ``name`` and everything in it (nothing when it does not exist)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bsky_backfill.state.sql.engine import store_url

    engine = create_async_engine(store_url(postgres_url()))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        await engine.dispose()
