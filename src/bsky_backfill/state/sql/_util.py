"""Small helpers shared by the SQL modules: dialect-specific INSERT, chunking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["IN_CHUNK", "chunked", "dialect_insert"]

T = TypeVar("T")

IN_CHUNK: Final = 500
"""Values per ``IN (...)`` list: well under SQLite's 32766 parameters, and small enough
for PostgreSQL to plan as an index lookup."""


def dialect_insert(conn: AsyncConnection, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT with ``on_conflict_do_*`` for the connection's dialect (the generic
    ``insert`` has no portable upsert; SQLite and PostgreSQL share this syntax)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``, lazily (a million DIDs are never all in
    memory twice)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
