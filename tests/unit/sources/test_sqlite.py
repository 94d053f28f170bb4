from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bsky_backfill.errors import ConfigError
from bsky_backfill.sources.sqlite import read_did_query


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "study.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (did TEXT, cohort INT)")
        conn.executemany(
            "INSERT INTO users VALUES (?, ?)", [(f"did:plc:{i:024d}", i % 2) for i in range(10)]
        )
    return path


def test_a_select_yields_the_first_column(db: Path) -> None:
    dids = list(read_did_query(db, "SELECT did FROM users WHERE cohort = 1 ORDER BY did;"))
    assert len(dids) == 5
    assert dids[0] == f"did:plc:{1:024d}"


def test_subqueries_and_ctes_are_allowed(db: Path) -> None:
    query = "WITH c AS (SELECT did FROM users WHERE cohort = 0) SELECT did FROM c"
    assert len(list(read_did_query(db, query))) == 5


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM users",
        "INSERT INTO users VALUES ('x', 1)",
        "UPDATE users SET did = 'x'",
        "DROP TABLE users",
        "ATTACH DATABASE '/tmp/evil.sqlite' AS evil",
        "PRAGMA writable_schema = ON",
        "CREATE TABLE t (x)",
        "SELECT load_extension('x')",
        "SELECT did FROM users; DELETE FROM users",
    ],
)
def test_anything_but_one_read_is_refused_and_nothing_changes(db: Path, query: str) -> None:
    with pytest.raises(ConfigError):
        list(read_did_query(db, query))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)
    assert not (db.parent / "evil.sqlite").exists()


def test_a_semicolon_inside_a_string_is_not_a_second_statement(db: Path) -> None:
    assert list(read_did_query(db, "SELECT did FROM users WHERE did = 'a;b'")) == []


def test_a_missing_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_did_query(tmp_path / "none.sqlite", "SELECT 1")
