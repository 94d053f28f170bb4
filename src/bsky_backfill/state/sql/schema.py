"""The job store's tables: the one place its DDL lives.

Written with SQLAlchemy Core so the same ``metadata`` creates the schema on SQLite and
PostgreSQL, and so Alembic can take it over as ``target_metadata`` (the naming convention
gives every constraint and index a stable name for migrations to refer to).

Tables:
- ``store_meta``: key/value; ``schema_version`` guards against opening a store written by
  another version of this schema.
- ``jobs``: one row per job; ``key`` is a small surrogate so per-DID indexes stay compact
  (a 36-character job id repeated in every index entry of a million DIDs costs ~100 MB).
  ``batch_seq`` is the last batch number issued for the job.
- ``dids``: one row per (job, DID): state, attempts, claim (``worker_id``, ``claimed_at``),
  ``not_before`` (retry backoff), identity (``handle``, ``pds`` and its ``host``), the
  outcome (:class:`~bsky_backfill.core.models.RepoRow`'s fields), ``batch`` (the batch that
  made the outcome visible) and ``superseded_batch`` (the batch whose rows a re-run replaces).
- ``batches``: one row per issued batch: state (open / committed / published /
  abandoned), the worker that opened it, timestamps, counts.
- ``identities``: the identity cache, shared by all jobs: DID -> serialized entry.
- ``dispatch_targets``: one row per (dispatch, integration) of ``bsky_backfill.dispatch``;
  ``key`` is its surrogate, ``batch_seq`` the last batch number issued to it.
- ``dispatch_batches``: one row per batch sent to an integration: open (being sent) ->
  acknowledged (the receiver answered success), or abandoned (a run died with it open).
- ``dispatch_deliveries``: one row per record version (uri, cid) an integration
  acknowledged, written in the same transaction that marks its batch acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from bsky_backfill.core.models import DidState
from bsky_backfill.state.model import BatchState, JobState

__all__ = [
    "DISPATCH_BATCH_STATES",
    "SCHEMA_VERSION",
    "UtcDateTime",
    "batches",
    "dids",
    "dispatch_batches",
    "dispatch_deliveries",
    "dispatch_targets",
    "identities",
    "jobs",
    "metadata",
    "store_meta",
]

SCHEMA_VERSION: Final = 1
"""The pre-Alembic marker in ``store_meta``: stays 1 for good. The schema's version is
now its Alembic revision (``state/migrations``); bumping this without rewriting
``store_meta`` in a revision would make every existing store refuse to open."""

DISPATCH_BATCH_STATES: Final = ("open", "acknowledged", "abandoned")
"""The states of a ``dispatch_batches`` row (``bsky_backfill.dispatch.ledger.BatchStatus``)."""

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend: SQLite keeps no offset, so values are
    stored in UTC and read back with ``tzinfo=UTC``; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: Iterable[str]) -> str:
    """A CHECK that ``column`` holds one of an enum's values (quoted as SQL literals)."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


_JSON = JSON().with_variant(JSONB(), "postgresql")

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("key", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String, nullable=False, unique=True),
    Column("name", String, nullable=False),
    Column("config_text", Text, nullable=False),
    Column("config_hash", String, nullable=False),
    Column("state", String(16), nullable=False),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("batch_seq", Integer, nullable=False, server_default="0"),
    CheckConstraint(_one_of("state", JobState), name="state"),
)

dids = Table(
    "dids",
    metadata,
    Column("job", Integer, ForeignKey("jobs.key"), primary_key=True),
    Column("did", String, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("worker_id", String),
    Column("claimed_at", UtcDateTime),
    Column("not_before", UtcDateTime),
    Column("handle", String),
    Column("pds", String),
    Column("host", String),
    Column("rev", String),
    Column("commit_cid", String),
    Column("verified", String(16)),
    Column("records", BigInteger, nullable=False, server_default="0"),
    Column("records_by_collection", _JSON),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("error_kind", String),
    Column("error", Text),
    Column("fetched_at", UtcDateTime),
    Column("batch", Integer),
    Column("superseded_batch", Integer),
    CheckConstraint(_one_of("state", DidState), name="state"),
    # Serves claim (job, 'pending', host), pending_hosts, counts and host_counts, and the
    # keyset walk of unresolved DIDs (job, 'pending', NULL host, did > ?).
    Index(None, "job", "state", "host", "did"),
    Index(None, "job", "batch"),
)

batches = Table(
    "batches",
    metadata,
    Column("job", Integer, ForeignKey("jobs.key"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("worker_id", String, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("committed_at", UtcDateTime),
    Column("published_at", UtcDateTime),
    Column("dids", Integer, nullable=False, server_default="0"),
    Column("records", BigInteger, nullable=False, server_default="0"),
    CheckConstraint(_one_of("state", BatchState), name="state"),
    Index(None, "job", "state"),
)

identities = Table(
    "identities",
    metadata,
    Column("did", String, primary_key=True),
    Column("expires_at", Float, nullable=False),
    Column("entry", Text, nullable=False),
    Index(None, "expires_at"),
)

dispatch_targets = Table(
    "dispatch_targets",
    metadata,
    Column("key", Integer, primary_key=True, autoincrement=True),
    Column("dispatch", String, nullable=False),
    Column("integration", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("batch_seq", Integer, nullable=False, server_default="0"),
    UniqueConstraint("dispatch", "integration"),
)

dispatch_batches = Table(
    "dispatch_batches",
    metadata,
    Column("target", Integer, ForeignKey("dispatch_targets.key"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("records", Integer, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    CheckConstraint(_one_of("state", DISPATCH_BATCH_STATES), name="state"),
    Index(None, "target", "state"),
)

dispatch_deliveries = Table(
    "dispatch_deliveries",
    metadata,
    Column("target", Integer, ForeignKey("dispatch_targets.key"), primary_key=True),
    Column("uri", String, primary_key=True),
    Column("cid", String, primary_key=True),
    Column("batch", Integer, nullable=False),
    Column("acknowledged_at", UtcDateTime, nullable=False),
)
