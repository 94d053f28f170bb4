"""Every SQLAlchemy / driver exception becomes StoreUnavailable, StoreError or ConfigError
in one place (state/sql/translate.py); real failures arrive there translated."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from bsky_backfill.errors import ConfigError, StoreError, StoreUnavailable
from bsky_backfill.state import SqlJobStore, StoreOptions
from bsky_backfill.state.sql.schema import store_meta
from bsky_backfill.state.sql.translate import store_errors, translate
from tests.support import require
from tests.unit.state.conftest import Backend, sqlite_url

U, E, C = StoreUnavailable, StoreError, ConfigError

# Every exception class SQLAlchemy defines, and what it becomes when it carries no driver
# error code. A class SQLAlchemy adds later fails test_every_class_has_a_decision.
EXPECTED: dict[str, type[Exception]] = {
    "SQLAlchemyError": E,
    "EmulatedDBAPIException": E,
    "ArgumentError": E,
    "DuplicateColumnError": E,
    "ObjectNotExecutableError": E,
    "NoSuchModuleError": C,
    "NoForeignKeysError": E,
    "AmbiguousForeignKeysError": E,
    "ConstraintColumnNotFoundError": E,
    "CircularDependencyError": E,
    "CompileError": E,
    "UnsupportedCompilationError": E,
    "IdentifierError": E,
    "DisconnectionError": U,
    "InvalidatePoolError": U,
    "TimeoutError": U,
    "InvalidRequestError": E,
    "IllegalStateChangeError": E,
    "NoInspectionAvailable": E,
    "NoDBAPILoaded": E,
    "PendingRollbackError": E,
    "ResourceClosedError": E,
    "NoSuchColumnError": E,
    "AmbiguousColumnError": E,
    "NoResultFound": E,
    "MultipleResultsFound": E,
    "NoReferenceError": E,
    "AwaitRequired": E,
    "MissingGreenlet": E,
    "NoReferencedTableError": E,
    "NoReferencedColumnError": E,
    "NoSuchTableError": E,
    "UnreflectableTableError": E,
    "UnboundExecutionError": E,
    "StatementError": E,
    "DBAPIError": E,
    "InterfaceError": U,
    "DatabaseError": E,
    "DataError": E,
    "OperationalError": U,
    "IntegrityError": E,
    "InternalError": E,
    "ProgrammingError": E,
    "NotSupportedError": E,
}


def sa_exception_classes() -> dict[str, type[Exception]]:
    return {
        name: value
        for name, value in vars(sa_exc).items()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and not issubclass(value, Warning)
    }


def instance(cls: type[Exception], orig: BaseException | None = None) -> Exception:
    """An instance of ``cls`` whatever its constructor; only its class and ``orig`` matter."""
    if issubclass(cls, sa_exc.DBAPIError):
        return cls("SELECT 1", {}, orig or Exception("no code"))
    if issubclass(cls, sa_exc.StatementError):
        return cls("failed", "SELECT 1", {}, orig)
    error = cls.__new__(cls)
    Exception.__init__(error, "failed")
    return error


def test_every_class_has_a_decision() -> None:
    assert set(sa_exception_classes()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sqlalchemy_classes_map_as_decided(name: str) -> None:
    cls = sa_exception_classes().get(name)
    if cls is None:
        pytest.skip(f"this SQLAlchemy has no {name}")
    translated = translate(instance(cls), "claim")
    assert type(translated) is EXPECTED[name]
    assert "claim" in str(translated) or isinstance(translated, ConfigError)


def sqlite_error(code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("from sqlite")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (5, U),  # BUSY
        (517, U),  # BUSY_SNAPSHOT: the primary code decides
        (6, U),  # LOCKED
        (7, U),  # NOMEM
        (10, U),  # IOERR
        (522, U),  # IOERR_SHORT_READ
        (13, U),  # FULL
        (15, U),  # PROTOCOL
        (1, E),  # ERROR: no such table, syntax
        (8, E),  # READONLY
        (11, E),  # CORRUPT
        (14, E),  # CANTOPEN
        (19, E),  # CONSTRAINT
        (26, E),  # NOTADB
    ],
)
def test_sqlite_result_codes(code: int, expected: type[Exception]) -> None:
    wrapped = sa_exc.OperationalError("SELECT 1", {}, sqlite_error(code))
    assert type(translate(wrapped, "claim")) is expected
    assert type(translate(sqlite_error(code), "claim")) is expected  # unwrapped, too


def require_asyncpg() -> None:
    require(importlib.util.find_spec("asyncpg") is not None, "the asyncpg driver")


def asyncpg_error(name: str) -> Any:
    """The driver error SQLAlchemy's asyncpg adapter makes of asyncpg's ``name``."""
    require_asyncpg()
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

    original = getattr(asyncpg.exceptions, name)("from postgres")
    return AsyncAdapt_asyncpg_dbapi.Error("from postgres", original)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ConnectionDoesNotExistError", U),  # 08003
        ("ConnectionFailureError", U),  # 08006
        ("SerializationError", U),  # 40001
        ("DeadlockDetectedError", U),  # 40P01
        ("TooManyConnectionsError", U),  # 53300
        ("DiskFullError", U),  # 53100
        ("AdminShutdownError", U),  # 57P01
        ("CannotConnectNowError", U),  # 57P03
        ("QueryCanceledError", U),  # 57014
        ("LockNotAvailableError", U),  # 55P03
        ("UniqueViolationError", E),  # 23505
        ("UndefinedTableError", E),  # 42P01
        ("InvalidTextRepresentationError", E),  # 22P02
        ("InsufficientPrivilegeError", E),  # 42501
    ],
)
def test_postgres_sqlstates(name: str, expected: type[Exception]) -> None:
    orig = asyncpg_error(name)
    assert type(translate(sa_exc.DBAPIError("SELECT 1", {}, orig), "claim")) is expected
    assert type(translate(orig, "claim")) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), U),
        (TimeoutError(), U),
        (ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg"), C),
        (
            sa_exc.OperationalError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
            U,
        ),
        (sa_exc.IntegrityError("SELECT 1", {}, Exception("dup"), connection_invalidated=True), U),
    ],
)
def test_other_errors(error: Exception, expected: type[Exception]) -> None:
    assert type(translate(error, "claim")) is expected


def test_non_database_errors_pass_through() -> None:
    for error in (TypeError("bug"), KeyError("bug"), StoreError("already ours")):
        assert translate(error, "claim") is error
    with pytest.raises(TypeError), store_errors("claim"):
        raise TypeError("bug")
    with pytest.raises(asyncio.CancelledError), store_errors("claim"):
        raise asyncio.CancelledError
    with pytest.raises(StoreUnavailable) as caught, store_errors("claim"):
        raise sa_exc.OperationalError("SELECT 1" * 1000, {"p": "x" * 10_000}, sqlite_error(5))
    assert isinstance(caught.value.__cause__, sa_exc.OperationalError)
    assert len(str(caught.value)) < 400  # no SQL text or parameters in the message


# --- real failures ---------------------------------------------------------------------


async def test_locked_sqlite_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SqlJobStore.open(sqlite_url(path), StoreOptions(busy_timeout=0.2))
    try:
        await store.create_job("j", "n", "", "h")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match=r"add_dids.*locked"):
            await store.add_dids("j", ["did:plc:x"])
        assert await store.counts("j")  # readers are not blocked (WAL)
        holder.execute("ROLLBACK")
        holder.close()
        assert await store.add_dids("j", ["did:plc:x"]) == 1
    finally:
        await store.aclose()


async def test_unusable_sqlite_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        await SqlJobStore.open(garbage)
    with pytest.raises(StoreError, match=r"directory .*missing does not exist"):
        await SqlJobStore.open(tmp_path / "missing" / "state.db")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "not a database URL"),
        ("mysql://localhost/db", "only SQLite and PostgreSQL"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql+nosuchdriver://localhost/db", "URL"),
    ],
)
async def test_bad_urls_are_config_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        await SqlJobStore.open(url)


async def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema"):
        StoreOptions(schema="Robert'); DROP TABLE jobs;--")
    with pytest.raises(ConfigError, match="PostgreSQL option"):
        await SqlJobStore.open(tmp_path / "s.db", StoreOptions(schema="x"))


async def test_unreachable_postgres_is_unavailable() -> None:
    require_asyncpg()
    options = StoreOptions(connect_timeout=2)
    with pytest.raises(StoreUnavailable, match="open"):
        await SqlJobStore.open("postgresql://postgres@127.0.0.1:1/test", options)


async def test_other_schema_version_is_refused(backend: Backend) -> None:
    async with await backend.open() as store, store._tx("test") as conn:
        await conn.execute(store_meta.update().values(value="999"))
    with pytest.raises(StoreError, match="schema version 999"):
        await backend.open()
