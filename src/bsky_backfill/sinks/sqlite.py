"""SqliteSink: the dataset as one SQLite database, ``<path>/dataset.sqlite``.

Query the views ``records_v`` and ``repos_v``: every column of ``rows.RECORD_COLUMNS`` /
``rows.REPO_COLUMNS`` (text forms: RFC 3339 timestamps, JSON text), published rows only.
The tables ``records`` and ``repos`` under them add ``batch_id`` and ``published``;
``batches`` and ``supersedes`` hold the protocol's state.

- ``stage``: one transaction deletes whatever was staged for the batch, inserts its rows
  with ``published = 0``, and records its supersessions.
- ``publish``: one transaction deletes the superseded rows (published or still staged),
  sets ``published = 1`` and forgets the supersessions: readers see all of it or none.
- ``discard``: one transaction deletes the batch's unpublished rows.

Rollback journal with ``synchronous = FULL``: each commit is durable when it returns and
the database is always one file (which the manifest's sha256 covers). A reader holding a
long query delays a commit for up to ``BUSY_TIMEOUT`` seconds, then ``SinkWriteFailed``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from bsky_backfill.core.models import RepoResult
from bsky_backfill.sinks.base import LocalSink, SinkWriteFailed
from bsky_backfill.sinks.durable import make_dirs
from bsky_backfill.sinks.manifest import DatasetInventory, file_entry, remove_manifest
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS, record_values, repo_values

__all__ = ["BUSY_TIMEOUT", "DATABASE_NAME", "SqliteSink"]

DATABASE_NAME: Final = "dataset.sqlite"
BUSY_TIMEOUT: Final = 30.0

# The result codes that mean "this write cannot happen now"; any other is a bug, raised as is.
_WRITE_FAILURES = frozenset(
    (
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    )
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    did TEXT NOT NULL, collection TEXT NOT NULL, rkey TEXT NOT NULL, uri TEXT NOT NULL,
    cid TEXT NOT NULL, created_at TEXT, record TEXT NOT NULL, rev TEXT NOT NULL,
    commit_cid TEXT NOT NULL, pds TEXT NOT NULL, job_id TEXT NOT NULL,
    fetched_at TEXT NOT NULL, text TEXT, subject_uri TEXT, subject_did TEXT,
    reply_parent_uri TEXT, reply_root_uri TEXT, created_at_flag TEXT,
    batch_id TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_batch ON records (batch_id, did);
CREATE TABLE IF NOT EXISTS repos (
    did TEXT NOT NULL, handle TEXT, pds TEXT, status TEXT NOT NULL, rev TEXT,
    commit_cid TEXT, verified TEXT, records INTEGER NOT NULL,
    records_by_collection TEXT NOT NULL, bytes INTEGER NOT NULL, error TEXT, fetched_at TEXT,
    batch_id TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS repos_batch ON repos (batch_id, did);
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, published INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS supersedes (
    batch_id TEXT NOT NULL, did TEXT NOT NULL, old_batch TEXT NOT NULL,
    PRIMARY KEY (batch_id, did)
);
CREATE VIEW IF NOT EXISTS records_v AS
    SELECT {", ".join(RECORD_COLUMNS)} FROM records WHERE published = 1;
CREATE VIEW IF NOT EXISTS repos_v AS
    SELECT {", ".join(REPO_COLUMNS)} FROM repos WHERE published = 1;
"""

_INSERT_RECORD = (
    f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}, batch_id) "
    f"VALUES ({', '.join('?' * (len(RECORD_COLUMNS) + 1))})"
)
_INSERT_REPO = (
    f"INSERT INTO repos ({', '.join(REPO_COLUMNS)}, batch_id) "
    f"VALUES ({', '.join('?' * (len(REPO_COLUMNS) + 1))})"
)


class SqliteSink(LocalSink):
    """Writes the dataset into ``<path>/dataset.sqlite``; see the module docstring.

    Opens a connection per call (closed before it returns), so it holds no resource.
    """

    format = "sqlite"

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.database = self.path / DATABASE_NAME
        self._schema_ready = False

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: committed if the block returns, rolled back if it raises.

        Translates SQLite's write failures (full, read-only, I/O, busy ...) into
        ``SinkWriteFailed``; the only place this module maps sqlite3 errors.
        """
        try:
            make_dirs(self.path)
            db = sqlite3.connect(self.database, timeout=BUSY_TIMEOUT, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous = FULL")
                if not self._schema_ready:
                    db.executescript(_SCHEMA)
                    self._schema_ready = True
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF not in _WRITE_FAILURES:
                raise
            where = str(self.database)
            raise SinkWriteFailed(
                f"cannot write the dataset at {where}: {e} ({e.sqlite_errorname})", path=where
            ) from e

    def _is_published(self, batch_id: str) -> bool:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT published FROM batches WHERE batch_id = ?", (batch_id,))
            return (row.fetchone() or (0,))[0] == 1

    def _stage(
        self, batch_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> None:
        with self._transaction() as db:
            self._delete_staged(db, batch_id)
            db.executemany(
                _INSERT_RECORD,
                ((*record_values(r), batch_id) for result in results for r in result.records),
            )
            db.executemany(
                _INSERT_REPO, ((*repo_values(result.repo), batch_id) for result in results)
            )
            db.executemany(
                "INSERT INTO supersedes (batch_id, did, old_batch) VALUES (?, ?, ?)",
                ((batch_id, did, old) for did, old in supersedes.items()),
            )
            db.execute("INSERT INTO batches (batch_id, published) VALUES (?, 0)", (batch_id,))

    def _publish(self, batch_id: str) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT published FROM batches WHERE batch_id = ?", (batch_id,))
            if (row.fetchone() or (1,))[0] == 1:
                return
            remove_manifest(self.path)
            for table in ("records", "repos"):
                db.execute(
                    f"DELETE FROM {table} WHERE (batch_id, did) IN "
                    "(SELECT old_batch, did FROM supersedes WHERE batch_id = ?)",
                    (batch_id,),
                )
                db.execute(f"UPDATE {table} SET published = 1 WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM supersedes WHERE batch_id = ?", (batch_id,))
            db.execute("UPDATE batches SET published = 1 WHERE batch_id = ?", (batch_id,))

    def _discard(self, batch_id: str) -> None:
        with self._transaction() as db:
            self._delete_staged(db, batch_id)

    @staticmethod
    def _delete_staged(db: sqlite3.Connection, batch_id: str) -> None:
        for table in ("records", "repos", "batches"):
            db.execute(f"DELETE FROM {table} WHERE batch_id = ? AND published = 0", (batch_id,))
        db.execute("DELETE FROM supersedes WHERE batch_id = ?", (batch_id,))

    def _staged_batches(self) -> set[str]:
        with self._transaction(write=False) as db:
            return {b for (b,) in db.execute("SELECT batch_id FROM batches WHERE published = 0")}

    def _inventory(self) -> DatasetInventory:
        with self._transaction(write=False) as db:
            by_collection = dict(
                db.execute("SELECT collection, count(*) FROM records_v GROUP BY collection")
            )
            by_status = dict(db.execute("SELECT status, count(*) FROM repos_v GROUP BY status"))
        rows = sum(by_collection.values()) + sum(by_status.values())
        entry = file_entry(self.path, self.database, "sqlite", rows)
        return DatasetInventory((entry,), by_collection, by_status)
