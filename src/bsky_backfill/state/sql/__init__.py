"""The SQL backend of the job store (SQLite, PostgreSQL): ``SqlJobStore`` and its parts."""

from bsky_backfill.state.sql.engine import StoreOptions
from bsky_backfill.state.sql.store import SqlJobStore

__all__ = ["SqlJobStore", "StoreOptions"]
