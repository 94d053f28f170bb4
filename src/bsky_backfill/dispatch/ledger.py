"""The dispatch bookkeeping in the state store: what each integration acknowledged.

Tables (``state/sql/schema.py``, revision 0002): ``dispatch_targets`` (one per dispatch
and integration name), ``dispatch_batches`` (each batch sent: open -> acknowledged, or
abandoned) and ``dispatch_deliveries`` (each acknowledged record version, uri + cid).

The protocol, per batch, one batch in flight per integration::

    open_batch      batch row 'open' (its number is in the payload)
    send            the receiver answers success
    acknowledge     ONE transaction: every (uri, cid) of the batch into deliveries,
                    the batch 'acknowledged'

A record is never sent again once acknowledged. A run killed between ``open_batch`` and
``acknowledge`` leaves the batch open and its records unrecorded: the next run marks it
abandoned (:meth:`SqlDispatchLedger.abandon_open`) and sends those records again, so a
receiver sees at most that one batch twice and dedupes it by uri + cid.

The engine and error translation are the job store's (``state/sql``): SQLite (WAL,
``synchronous=FULL``, ``BEGIN IMMEDIATE``) or PostgreSQL, the schema upgraded on open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bsky_backfill.aio import finishes_before_cancel
from bsky_backfill.state.sql._util import IN_CHUNK, chunked, dialect_insert
from bsky_backfill.state.sql.engine import (
    READ_ONLY,
    StoreOptions,
    create_store_engine,
    ensure_schema,
    store_url,
)
from bsky_backfill.state.sql.schema import dispatch_batches, dispatch_deliveries, dispatch_targets
from bsky_backfill.state.sql.translate import store_errors, transaction

__all__ = ["BatchStatus", "DeliveryTotals", "SqlDispatchLedger", "open_ledger"]


class BatchStatus(StrEnum):
    """A dispatch batch's life (``schema.DISPATCH_BATCH_STATES``)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class DeliveryTotals:
    """An integration's bookkeeping so far: record versions acknowledged, batches by
    status."""

    acknowledged: int
    batches: dict[str, int]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@asynccontextmanager
async def open_ledger(
    target: str | Path,
    options: StoreOptions | None = None,
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> AsyncIterator[SqlDispatchLedger]:
    """The ledger at ``target`` (a SQLite path, or a ``sqlite://`` / ``postgresql://``
    URL), its schema created or upgraded first; its connections are closed on exit.
    ``clock`` (aware UTC) is for tests. Raises the store's errors."""
    options = options or StoreOptions()
    with store_errors("open"):
        engine = create_store_engine(store_url(target), options)
    try:
        with store_errors("open"):
            await ensure_schema(engine, options.schema)
        yield SqlDispatchLedger(engine, clock)
    finally:
        with store_errors("close"):
            await engine.dispose()


class SqlDispatchLedger:
    """The bookkeeping on a SQL database; see the module docstring. Made by
    :func:`open_ledger`. Each method is one transaction; writing ones finish before a
    cancellation reaches the caller. Raises the store's errors (``StoreUnavailable``,
    ``StoreError``)."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._clock = clock

    @asynccontextmanager
    async def _tx(
        self, operation: str, *, read_only: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        async with transaction(self._reader if read_only else self._engine, operation) as conn:
            yield conn

    @finishes_before_cancel
    async def target(self, dispatch: str, integration: str) -> int:
        """The key of ``(dispatch, integration)``, created on first use. Idempotent."""
        async with self._tx("dispatch_target") as conn:
            await conn.execute(
                dialect_insert(conn, dispatch_targets)
                .values(dispatch=dispatch, integration=integration, created_at=self._clock())
                .on_conflict_do_nothing()
            )
            key = await conn.scalar(
                select(dispatch_targets.c.key).where(
                    dispatch_targets.c.dispatch == dispatch,
                    dispatch_targets.c.integration == integration,
                )
            )
        assert key is not None  # inserted or found in this transaction
        return int(key)

    @finishes_before_cancel
    async def abandon_open(self, target: int) -> tuple[int, int]:
        """Mark ``target``'s open batches abandoned: left by a run that died or gave up,
        their records were never recorded, so they are sent again. Returns how many
        batches and records that was."""
        open_ = and_(
            dispatch_batches.c.target == target,
            dispatch_batches.c.state == BatchStatus.OPEN.value,
        )
        async with self._tx("dispatch_abandon") as conn:
            row = (
                await conn.execute(
                    select(
                        func.count(), func.coalesce(func.sum(dispatch_batches.c.records), 0)
                    ).where(open_)
                )
            ).one()
            await conn.execute(
                dispatch_batches.update()
                .where(open_)
                .values(state=BatchStatus.ABANDONED.value, closed_at=self._clock())
            )
        return int(row[0]), int(row[1])

    async def acknowledged(
        self, target: int, keys: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which of ``keys`` (uri, cid) ``target`` has acknowledged."""
        found: set[tuple[str, str]] = set()
        columns = tuple_(dispatch_deliveries.c.uri, dispatch_deliveries.c.cid)
        async with self._tx("dispatch_acknowledged", read_only=True) as conn:
            for chunk in chunked(keys, IN_CHUNK):
                rows = await conn.execute(
                    select(dispatch_deliveries.c.uri, dispatch_deliveries.c.cid).where(
                        dispatch_deliveries.c.target == target, columns.in_(chunk)
                    )
                )
                found.update((uri, cid) for uri, cid in rows)
        return found

    @finishes_before_cancel
    async def open_batch(self, target: int, records: int) -> int:
        """Issue ``target``'s next batch number, recorded as open with ``records``."""
        async with self._tx("dispatch_open_batch") as conn:
            seq = await conn.scalar(
                dispatch_targets.update()
                .where(dispatch_targets.c.key == target)
                .values(batch_seq=dispatch_targets.c.batch_seq + 1)
                .returning(dispatch_targets.c.batch_seq)
            )
            assert seq is not None  # ``target`` came from :meth:`target`
            await conn.execute(
                dispatch_batches.insert().values(
                    target=target,
                    seq=seq,
                    state=BatchStatus.OPEN.value,
                    records=records,
                    opened_at=self._clock(),
                )
            )
        return int(seq)

    @finishes_before_cancel
    async def acknowledge(self, target: int, seq: int, keys: Sequence[tuple[str, str]]) -> None:
        """Record ``keys`` as acknowledged by ``target`` and close batch ``seq``, in one
        transaction. Idempotent: a version recorded already keeps its first batch."""
        now = self._clock()
        async with self._tx("dispatch_acknowledge") as conn:
            for chunk in chunked(keys, IN_CHUNK):
                await conn.execute(
                    dialect_insert(conn, dispatch_deliveries)
                    .values(
                        [
                            {
                                "target": target,
                                "uri": uri,
                                "cid": cid,
                                "batch": seq,
                                "acknowledged_at": now,
                            }
                            for uri, cid in chunk
                        ]
                    )
                    .on_conflict_do_nothing()
                )
            await conn.execute(
                dispatch_batches.update()
                .where(dispatch_batches.c.target == target, dispatch_batches.c.seq == seq)
                .values(state=BatchStatus.ACKNOWLEDGED.value, closed_at=now)
            )

    async def totals(self, target: int) -> DeliveryTotals:
        """``target``'s acknowledged record versions and batches by status."""
        async with self._tx("dispatch_totals", read_only=True) as conn:
            acknowledged = await conn.scalar(
                select(func.count()).where(dispatch_deliveries.c.target == target)
            )
            rows = await conn.execute(
                select(dispatch_batches.c.state, func.count())
                .where(dispatch_batches.c.target == target)
                .group_by(dispatch_batches.c.state)
            )
            batches = {str(state): int(n) for state, n in rows}
        return DeliveryTotals(int(acknowledged or 0), batches)
