"""SQLAlchemy and driver exceptions -> the project's error tree, in exactly one place.

``SqlJobStore`` runs every database call inside :func:`store_errors`, so callers only ever
see :class:`~bsky_backfill.errors.StoreUnavailable` (retryable: the database is locked,
busy, unreachable, restarting, or a transaction lost a serialization race),
:class:`~bsky_backfill.errors.StoreError` (retrying cannot help: a schema it does not
know, a violated constraint, a corrupt file) or :class:`~bsky_backfill.errors.ConfigError`
(a URL naming no usable database). Exceptions that are not about the database (a
``TypeError`` from a bug, cancellation) pass through untouched.

Retryability is decided from error codes, not message text: SQLite's primary result code
(``sqlite_errorcode``) and PostgreSQL's SQLSTATE class.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Final

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bsky_backfill.errors import BackfillError, ConfigError, StoreError, StoreUnavailable

__all__ = ["is_retryable_driver_error", "store_errors", "transaction", "translate"]

# SQLite primary result codes worth retrying: another connection holds the lock (BUSY,
# LOCKED), the machine ran short (NOMEM, FULL: the disk), or the file system failed
# under us (IOERR, PROTOCOL: a WAL lock race). A full disk is "unavailable", not fatal:
# once space is freed the job goes on, as with PostgreSQL's disk_full (class 53).
_SQLITE_RETRYABLE: Final = frozenset({5, 6, 7, 10, 13, 15})
# SQLSTATE classes / codes worth retrying: connection exceptions (08), serialization
# failures and deadlocks (40), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown or a cancelled statement (57), system / I/O
# errors (58), and lock_not_available (55P03).
_PG_RETRYABLE_CLASSES: Final = frozenset({"08", "40", "53", "57", "58"})
_PG_RETRYABLE_CODES: Final = frozenset({"55P03"})
_MAX_MESSAGE: Final = 300
_EMULATED: Final[tuple[type[Exception], ...]] = tuple(
    cls for cls in [getattr(sa_exc, "EmulatedDBAPIException", None)] if isinstance(cls, type)
)


def is_retryable_driver_error(orig: BaseException | None) -> bool:
    """Whether a driver exception (``DBAPIError.orig``) says "try again later"."""
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(orig, sqlite3.Error) and isinstance(code, int):
        return code & 0xFF in _SQLITE_RETRYABLE
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _PG_RETRYABLE_CLASSES or sqlstate in _PG_RETRYABLE_CODES
    return False


def translate(error: Exception, operation: str) -> Exception:
    """The error to raise for ``error`` met while doing ``operation`` (e.g. "claim").

    Returns ``error`` itself when it is already a ``BackfillError`` or is not a database
    error at all (a bug's ``TypeError`` must surface as itself); never raises.
    """
    if isinstance(error, BackfillError):
        return error
    if isinstance(error, sa_exc.NoSuchModuleError):  # the URL names an unknown dialect
        return ConfigError(f"state store URL: {_brief(error)}")
    if isinstance(error, ImportError):  # the URL's driver (asyncpg, aiosqlite) is missing
        return ConfigError(f"state store: database driver not installed: {_brief(error)}")
    if isinstance(error, sa_exc.DBAPIError):
        orig = error.orig
        retryable = (
            error.connection_invalidated
            or is_retryable_driver_error(orig)
            # With no code to go by, PEP 249's classes decide: OperationalError is "not
            # under the programmer's control" (disconnects, timeouts), InterfaceError is
            # the driver losing its connection (asyncpg's closed connection, a broken pipe).
            or (
                isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
                and not _has_code(orig)
            )
        )
        return _store_error(retryable, operation, orig if orig is not None else error)
    if isinstance(error, (sqlite3.Error, *_EMULATED)):
        # A driver error that escaped unwrapped (SQLAlchemy's async adapters raise their
        # own before wrapping; SQLAlchemy < 2.1 has no such class): judged by its code.
        return _store_error(is_retryable_driver_error(error), operation, error)
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        # TimeoutError here is the pool's: every connection is busy.
        return _store_error(True, operation, error)
    if isinstance(error, sa_exc.SQLAlchemyError):
        return _store_error(False, operation, error)
    if isinstance(error, OSError | TimeoutError):
        # Drivers raise these raw while connecting: refused, unreachable, DNS, timeout.
        return _store_error(True, operation, error)
    return error


_DISK_TROUBLE: Final = ("disk I/O error", "database or disk is full")


def _store_error(retryable: bool, operation: str, cause: BaseException) -> BackfillError:
    brief = _brief(cause)
    if any(words in brief for words in _DISK_TROUBLE):
        # SQLite says no more than this: the usual cause is a full disk or a file size cap.
        brief += " (is the disk holding the job's _state folder full?)"
    if retryable:
        return StoreUnavailable(f"state store unavailable during {operation}: {brief}")
    return StoreError(f"state store refused {operation}: {brief}")


@contextmanager
def store_errors(operation: str) -> Iterator[None]:
    """Run the body, raising :func:`translate`'s answer for any exception it raises.

    The original exception is kept as ``__cause__``.
    """
    try:
        yield
    except Exception as error:
        translated = translate(error, operation)
        if translated is error:
            raise
        raise translated from error


def _has_code(orig: BaseException | None) -> bool:
    return getattr(orig, "sqlstate", None) is not None or isinstance(
        getattr(orig, "sqlite_errorcode", None), int
    )


def _brief(error: BaseException) -> str:
    """The first line of the message, without the SQL text and parameters SQLAlchemy
    appends (a bulk insert's parameters can be megabytes)."""
    try:
        text = (str(error).splitlines() or [""])[0].strip()
    except Exception:  # an exception whose __str__ fails must not hide the original
        text = ""
    text = text or type(error).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


@asynccontextmanager
async def transaction(engine: AsyncEngine, operation: str) -> AsyncIterator[AsyncConnection]:
    """One transaction on ``engine``, committed on success and rolled back on any
    exception, its database exceptions translated (:func:`store_errors`)."""
    with store_errors(operation):
        async with engine.begin() as conn:
            yield conn
