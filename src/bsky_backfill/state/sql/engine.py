"""Engines for the job store: URL handling, SQLite pragmas and transactions, the schema.

SQLite (the default, one file next to the output):
- WAL journal, so readers (``status``, the API) never block the writer, nor it them;
- ``synchronous=FULL``: a commit is on disk before ``commit_batch`` returns. The sink
  publishes right after; a commit lost to a power cut after that would publish rows
  whose DIDs the store still thinks unfinished, i.e. duplicates on the next run;
- ``busy_timeout``: a writer waits this long for the lock before ``StoreUnavailable``;
- transactions open with ``BEGIN IMMEDIATE`` (the write lock up front). A deferred
  transaction that reads and then writes cannot wait for the lock: SQLite fails it at once
  with "database is locked" to avoid a deadlock. Read-only work uses plain ``BEGIN``.

PostgreSQL: asyncpg; ``options.schema`` puts the tables in a schema of their own (created
if missing), which is also how tests isolate themselves.

The schema is made and upgraded by Alembic (``bsky_backfill.state.migrations``) when a
store opens, under a lock (the SQLite write lock; a PostgreSQL advisory lock), so workers
opening one store at once do not race each other's migrations.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event, select, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bsky_backfill.errors import ConfigError, StoreError
from bsky_backfill.state.migrations import upgrade_to_head
from bsky_backfill.state.sql.schema import SCHEMA_VERSION, store_meta

__all__ = [
    "READ_ONLY",
    "StoreOptions",
    "analyze",
    "create_store_engine",
    "ensure_schema",
    "store_url",
]

READ_ONLY: Final = "bsky_backfill_read_only"
"""Execution option: a transaction that only reads (plain ``BEGIN`` on SQLite)."""

_DRIVERS: Final = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SCHEMA_LOCK: Final = 0x6273_6B79  # pg_advisory_xact_lock key for schema creation ("bsky")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How the store talks to its database.

    ``busy_timeout``: seconds a SQLite writer waits for the lock. ``connect_timeout``:
    seconds to reach PostgreSQL. ``pool_size``: connections kept open. ``schema``: a
    PostgreSQL schema for the tables (None: the search path's default; not for SQLite).
    ``chunk_size``: rows per statement and per transaction in bulk writes (``add_dids``).
    ``lock_timeout``: seconds a PostgreSQL statement waits for a lock before it fails
    (retryably) — a wait behind a stalled session ends in an error that is retried,
    never in a worker stuck for good; ``idle_timeout``: seconds PostgreSQL keeps a
    session that sits idle inside a transaction before ending it (and its locks).
    """

    busy_timeout: float = 30.0
    connect_timeout: float = 10.0
    pool_size: int = 5
    schema: str | None = None
    chunk_size: int = 10_000
    lock_timeout: float = 60.0
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.schema is not None and not _SCHEMA_NAME.fullmatch(self.schema):
            raise ConfigError(f"state store schema {self.schema!r} must match [a-z_][a-z0-9_]*")
        timeouts = (self.connect_timeout, self.lock_timeout, self.idle_timeout)
        if self.busy_timeout < 0 or min(timeouts) <= 0 or self.pool_size < 1:
            raise ConfigError("state store timeouts must be positive and pool_size >= 1")
        if self.chunk_size < 1:
            raise ConfigError("state store chunk_size must be at least 1")


def store_url(target: str | Path) -> URL:
    """The async SQLAlchemy URL for ``target``: a path is a SQLite file; ``sqlite://`` and
    ``postgresql://`` URLs get the async driver. Raises ``ConfigError`` for other databases,
    for an in-memory SQLite database (every connection would see its own) and bad URLs."""
    if isinstance(target, Path):
        return URL.create("sqlite+aiosqlite", database=str(target))
    try:
        url = make_url(target)
    except Exception as error:  # ArgumentError, ValueError: both mean "not a URL"
        raise ConfigError(f"state store URL {target!r} is not a database URL") from error
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(f"state store URL {target!r}: only SQLite and PostgreSQL are supported")
    if url.drivername == backend:
        url = url.set(drivername=_DRIVERS[backend])
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigError("state store: an in-memory SQLite database cannot be shared; use a file")
    return url


def create_store_engine(url: URL, options: StoreOptions) -> AsyncEngine:
    """An engine for ``url`` set up as the module docstring says. Connects lazily: nothing
    is opened until the first transaction. The caller disposes of it."""
    kwargs: dict[str, Any] = {"pool_size": options.pool_size, "max_overflow": options.pool_size}
    execution: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if options.schema is not None:
            raise ConfigError("state store: schema is a PostgreSQL option, not for SQLite")
    else:
        kwargs["connect_args"] = {
            "timeout": options.connect_timeout,
            "server_settings": {
                "lock_timeout": str(round(options.lock_timeout * 1000)),
                "idle_in_transaction_session_timeout": str(round(options.idle_timeout * 1000)),
            },
        }
        kwargs["pool_pre_ping"] = True  # a server restart invalidates pooled connections
        if options.schema is not None:
            execution["schema_translate_map"] = {None: options.schema}
    if url.get_backend_name() == "sqlite":
        _check_sqlite_directory(url)
    engine = create_async_engine(url, **kwargs)
    if execution:
        engine = engine.execution_options(**execution)
    if url.get_backend_name() == "sqlite":
        _sqlite_events(engine, options)
    return engine


def _check_sqlite_directory(url: URL) -> None:
    """Refuse a file whose directory is missing before connecting: SQLite would only say
    "unable to open database file", and aiosqlite, failing to connect, leaves a thread
    behind that later writes to a closed event loop."""
    database = url.database or ""
    if database.startswith("file:") or url.query.get("uri"):
        return  # a SQLite URI: its own syntax, left to SQLite
    directory = Path(database).expanduser().resolve().parent
    if not directory.is_dir():
        raise StoreError(f"state store directory {directory} does not exist")


def _sqlite_events(engine: AsyncEngine, options: StoreOptions) -> None:
    busy_ms = int(options.busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module, which would defer it; _begin emits it.
        dbapi_connection.isolation_level = None
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _use_wal(cursor, options.busy_timeout)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()
        except BaseException:
            # Not a database, or unreadable: the pool re-raises without closing the new
            # connection, whose aiosqlite thread would then outlive the event loop.
            dbapi_connection.close()
            raise

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _use_wal(cursor: Any, patience: float) -> None:
    """Switch the database to WAL (it stays so: the setting is the file's). Switching
    needs the file to itself, and SQLite answers "database is locked" at once, busy
    timeout or not, when another connection opens the fresh file at the same moment;
    then the other connection has usually switched it already, else try again."""
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # the driver's OperationalError, as the adapter wraps it
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        time.sleep(0.01)  # on the driver's side of the adapter, once per lost race


async def ensure_schema(engine: AsyncEngine, schema: str | None) -> None:
    """Migrate the schema to the newest revision and check its version, in one locked
    transaction: a fresh database gets every table, a store made before Alembic is
    stamped at the first revision, and concurrent openers wait for each other.

    Idempotent. Raises ``StoreError`` if the database is at a revision or schema version
    this code does not know.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(select(text(f"pg_advisory_xact_lock({_SCHEMA_LOCK})")))
            if schema is not None:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(upgrade_to_head, schema)
        await _check_version(conn)


async def _check_version(conn: AsyncConnection) -> None:
    """Record ``SCHEMA_VERSION`` in a new store, or refuse one marked with another (the
    guard of stores made before Alembic, kept so such a store is never stamped wrongly)."""
    found = await conn.scalar(
        select(store_meta.c.value).where(store_meta.c.key == "schema_version")
    )
    if found is None:
        await conn.execute(
            store_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
        )
    elif found != str(SCHEMA_VERSION):
        raise StoreError(
            f"state store has schema version {found}; this version of bsky-backfill "
            f"uses {SCHEMA_VERSION}"
        )


async def analyze(conn: AsyncConnection, table: str, schema: str | None) -> None:
    """Refresh PostgreSQL's planner statistics for ``table`` (a no-op on SQLite).

    A job's DIDs arrive in bulk just before they are claimed; until autovacuum notices
    (up to a minute), plans would assume the table is as small as when last analyzed.
    """
    if conn.dialect.name == "postgresql":
        name = f'"{schema}"."{table}"' if schema is not None else f'"{table}"'
        await conn.execute(text(f"ANALYZE {name}"))
