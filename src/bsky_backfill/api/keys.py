"""API keys and the audit log, kept in the server's database (SQLite file or PostgreSQL).

A key is shown once, at creation, as ``bbk_<id>_<secret>``: ``id`` is 12 hex characters,
public (``keys list`` prints it, the audit log names it); ``secret`` is
``secrets.token_urlsafe(32)`` (256 bits). The database keeps only ``sha256(secret)``:
a stolen copy of it lets no one call the API. Neither the token nor the secret is ever
logged or stored.

Scopes nest: ``admin`` ⊇ ``write`` ⊇ ``read``.

Two tables of their own (own ``MetaData``, created on open if missing): ``api_keys`` and
``audit_log``. Database exceptions are translated as for the job store
(:func:`~bsky_backfill.state.sql.translate.store_errors`): callers see
``StoreUnavailable`` (retryable), ``StoreError`` or ``ConfigError``.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bsky_backfill.errors import StoreError
from bsky_backfill.state.sql._util import dialect_insert
from bsky_backfill.state.sql.engine import (
    _SCHEMA_LOCK,  # shared, so stores in one database never race each other's DDL
    READ_ONLY,
    StoreOptions,
    create_store_engine,
    store_url,
)
from bsky_backfill.state.sql.schema import UtcDateTime
from bsky_backfill.state.sql.translate import store_errors, transaction

__all__ = ["ApiKey", "AuditEntry", "KeyNotFound", "KeyStore", "Scope"]

logger = logging.getLogger(__name__)

_TOKEN_PREFIX: Final = "bbk_"
_ID_BYTES: Final = 6  # 12 hex characters
_SECRET_BYTES: Final = 32  # token_urlsafe(32): 43 characters
# The whole token, strictly (fullmatch: not even a trailing newline): anything else is
# refused before the database is asked.
_TOKEN: Final = re.compile(_TOKEN_PREFIX + r"([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# Recording every authenticated request would turn each read into a write (and on SQLite
# take the write lock); once a minute is precise enough to tell live keys from dead ones.
_LAST_USED_EVERY: Final = timedelta(minutes=1)
# Paths and details come from clients; a row stays small whatever they send.
_MAX_TEXT: Final = 2_000


class Scope(StrEnum):
    """What a key may do; each scope includes the ones below it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        """Whether a key with this scope may do what ``needed`` guards."""
        return _RANK[self] >= _RANK[needed]


_RANK: Final = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the store knows it: never its secret. Times are aware UTC."""

    id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited request: who (``key_id``, None when no key was accepted), what, when,
    and the status answered."""

    id: int
    at: datetime
    key_id: str | None
    method: str
    path: str
    status: int
    detail: str


class KeyNotFound(StoreError):
    """No key with this id exists; ``key_id`` names it."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


_metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)
_keys = Table(
    "api_keys",
    _metadata,
    Column("id", String(12), primary_key=True),
    Column("name", Text, nullable=False),
    Column("scope", String(8), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("last_used_at", UtcDateTime),
    CheckConstraint(f"scope IN ({', '.join(repr(s.value) for s in Scope)})", name="scope"),
)
_audit = Table(
    "audit_log",
    _metadata,
    # INTEGER on SQLite: only an INTEGER PRIMARY KEY is the autoincrementing rowid.
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("key_id", String(12)),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("detail", Text, nullable=False),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _digest(secret: str) -> bytes:
    # A plain sha256, not a password hash (scrypt, argon2): the secret is 256 random bits,
    # so there is no dictionary to try and nothing a slow hash would protect; a slow hash
    # would only cost every request (and invite a CPU-exhaustion attack on the endpoint).
    return hashlib.sha256(secret.encode("ascii")).hexdigest().encode("ascii")


def _parse_token(token: object) -> tuple[str, str] | None:
    """``(key id, secret)`` from a token, or None if it is not one; never raises."""
    if not isinstance(token, str):
        return None
    match = _TOKEN.fullmatch(token)
    return (match[1], match[2]) if match else None


class KeyStore:
    """API keys and the audit log on a SQL database.

    Open with ``await KeyStore.open(path_or_url)``; close with :meth:`aclose` or use it as
    an async context manager. Safe for concurrent use by many tasks and processes.
    """

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        """Use :meth:`open`, which also creates the tables."""
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._clock = clock

    @classmethod
    async def open(
        cls,
        target: str | Path,
        options: StoreOptions | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> KeyStore:
        """Open the store at ``target`` (a SQLite file path, or a ``sqlite://`` /
        ``postgresql://`` URL), creating its tables if missing (idempotent). Raises
        ``ConfigError`` for a bad URL, ``StoreUnavailable`` if the database cannot be
        reached. ``options.schema`` puts the tables in a PostgreSQL schema; ``clock``
        (aware UTC) is for tests."""
        options = options or StoreOptions()
        with store_errors("open key store"):
            engine = create_store_engine(store_url(target), options)
        try:
            with store_errors("open key store"):
                await _create_tables(engine, options.schema)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock)

    async def aclose(self) -> None:
        """Close every connection. Idempotent."""
        with store_errors("close key store"):
            await self._engine.dispose()

    async def __aenter__(self) -> KeyStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @asynccontextmanager
    async def _tx(
        self, operation: str, *, read_only: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on success; database exceptions translated."""
        async with transaction(self._reader if read_only else self._engine, operation) as conn:
            yield conn

    async def create(self, scope: Scope, name: str = "") -> tuple[ApiKey, str]:
        """A new key and its token. The token is returned here and only here: the store
        keeps its hash, so it cannot be shown again (revoke and create another). ``scope``
        may be given by name; an unknown one raises ``ValueError``."""
        scope = Scope(scope)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        now = self._clock()
        async with self._tx("create API key") as conn:
            # 48 random bits: a clash is all but impossible, but costs nothing to handle.
            for _ in range(3):
                key_id = secrets.token_hex(_ID_BYTES)
                inserted = await conn.execute(
                    dialect_insert(conn, _keys)
                    .values(
                        id=key_id,
                        name=name,
                        scope=scope.value,
                        secret_sha256=_digest(secret).decode("ascii"),
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                )
                if inserted.rowcount == 1:
                    break
            else:
                raise StoreError("could not find a free API key id")
        logger.info("API key created", extra={"key_id": key_id, "scope": scope.value})
        return ApiKey(id=key_id, name=name, scope=scope, created_at=now), (
            f"{_TOKEN_PREFIX}{key_id}_{secret}"
        )

    async def authenticate(self, token: str) -> ApiKey | None:
        """The active key ``token`` belongs to, or None: a malformed token, an unknown id,
        a wrong secret and a revoked key all give None (the caller answers 401 alike).
        Records ``last_used_at``, at most once a minute per key."""
        parsed = _parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        # Looked up by the public id, then the secret's hash compared in constant time:
        # the timing can tell whether an id exists, which ``keys list`` shows anyway, but
        # nothing about the secret.
        async with self._tx("authenticate", read_only=True) as conn:
            row = (await conn.execute(select(_keys).where(_keys.c.id == key_id))).mappings().first()
        if row is None:
            return None
        if not hmac.compare_digest(_digest(secret), row["secret_sha256"].encode("ascii")):
            return None
        key = _key(row)
        if not key.active:
            return None
        now = self._clock()
        if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_EVERY:
            async with self._tx("record API key use") as conn:
                # Conditional, so concurrent requests (or servers) write it once.
                stale = now - _LAST_USED_EVERY
                await conn.execute(
                    update(_keys)
                    .where(_keys.c.id == key_id)
                    .where((_keys.c.last_used_at.is_(None)) | (_keys.c.last_used_at <= stale))
                    .values(last_used_at=now)
                )
            key = ApiKey(
                id=key.id,
                name=key.name,
                scope=key.scope,
                created_at=key.created_at,
                revoked_at=key.revoked_at,
                last_used_at=now,
            )
        return key

    async def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        async with self._tx("list API keys", read_only=True) as conn:
            rows = (
                (await conn.execute(select(_keys).order_by(_keys.c.created_at, _keys.c.id)))
                .mappings()
                .all()
            )
        return [_key(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key: it authenticates no more. Idempotent (revoking a revoked key keeps
        its first ``revoked_at``). Raises :class:`KeyNotFound` for an unknown id."""
        async with self._tx("revoke API key") as conn:
            await conn.execute(
                update(_keys)
                .where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = (await conn.execute(select(_keys).where(_keys.c.id == key_id))).mappings().first()
        if row is None:
            raise KeyNotFound(key_id)
        logger.info("API key revoked", extra={"key_id": key_id})
        return _key(row)

    async def audit(
        self, key_id: str | None, method: str, path: str, status: int, detail: str = ""
    ) -> None:
        """Append one entry to the audit log (``key_id`` None: no key was accepted). Long
        ``path`` and ``detail`` are cut to 2000 characters. Never pass a token here."""
        async with self._tx("audit") as conn:
            await conn.execute(
                _audit.insert().values(
                    at=self._clock(),
                    key_id=key_id,
                    method=method[:16],
                    path=path[:_MAX_TEXT],
                    status=status,
                    detail=detail[:_MAX_TEXT],
                )
            )

    async def audit_entries(self, limit: int = 100) -> builtins.list[AuditEntry]:
        """The latest ``limit`` audit entries, newest first. Raises ``ValueError`` for a
        negative ``limit``."""
        if limit < 0:
            raise ValueError(f"limit must be at least 0, not {limit}")
        async with self._tx("read audit log", read_only=True) as conn:
            rows = (
                (await conn.execute(select(_audit).order_by(_audit.c.id.desc()).limit(limit)))
                .mappings()
                .all()
            )
        return [
            AuditEntry(
                id=row["id"],
                at=row["at"],
                key_id=row["key_id"],
                method=row["method"],
                path=row["path"],
                status=row["status"],
                detail=row["detail"],
            )
            for row in rows
        ]


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


async def _create_tables(engine: AsyncEngine, schema: str | None) -> None:
    """Create the tables if missing, under the schema lock (see ``state.sql.engine``)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(select(text(f"pg_advisory_xact_lock({_SCHEMA_LOCK})")))
            if schema is not None:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(_metadata.create_all)
