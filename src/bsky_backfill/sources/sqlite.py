"""DIDs from a SQLite database: one ``SELECT`` on a connection that can only read.

Enforced by SQLite itself, not by string matching: the file is opened ``mode=ro`` (no
writes, no journal), ``query_only`` is on, and an authorizer allows only reading —
``ATTACH``, ``PRAGMA``, writes, schema changes and functions that touch files are
denied while the statement is prepared. Exactly one statement is accepted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from bsky_backfill.errors import ConfigError

__all__ = ["read_did_query"]

_ALLOWED: Final = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# Functions that reach outside the database, or load code, even in a read-only query.
_DENIED_FUNCTIONS: Final = frozenset(
    {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
)
_KEY: Final = "backfill.source.query"


def _authorize(
    action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
) -> int:
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def read_did_query(path: Path, query: str) -> Iterator[str]:
    """Yield the first column of each row ``query`` returns from the database at ``path``.

    Raises ``ConfigError`` when the file is missing, the text is not exactly one
    statement, or SQLite refuses it (anything but reading: the message says what).
    """
    if not path.is_file():
        raise ConfigError(f"SQLite source {path} does not exist", key="backfill.source.path")
    text = query.strip().rstrip(";").strip()
    if not text or not sqlite3.complete_statement(text + ";") or ";" in _outside_strings(text):
        raise ConfigError("the SQLite source query must be exactly one SELECT statement", key=_KEY)
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        cursor = connection.execute(text)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise ConfigError(f"SQLite refused the source query: {exc}", key=_KEY) from None
    return _rows(connection, cursor)


def _rows(connection: sqlite3.Connection, cursor: sqlite3.Cursor) -> Iterator[str]:
    try:
        for value, *_rest in cursor:
            if isinstance(value, str) and value.strip():
                yield value.strip()
    finally:
        connection.close()


def _outside_strings(sql: str) -> str:
    """``sql`` with quoted strings and identifiers blanked, to find a second statement."""
    out, quote = [], None
    for char in sql:
        if quote is None and char in "'\"`[":
            quote = "]" if char == "[" else char
        elif quote is not None and char == quote:
            quote = None
        elif quote is None:
            out.append(char)
    return "".join(out)
