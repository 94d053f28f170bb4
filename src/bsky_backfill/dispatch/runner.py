"""A dispatch run from a validated config to its outcome: the glue the CLI and the API
call. Opens the bookkeeping, then runs every integration at once, each on its own: a
failed one is reported and the others go on.

Per integration: abandon the batches a dead run left open (their records are sent
again), then select, skip what was acknowledged, and send one batch at a time, marking
each acknowledged in the bookkeeping as soon as the receiver says so (``ledger.py``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from bsky_backfill.dispatch.batching import unsent_batches
from bsky_backfill.dispatch.config import DispatchConfig, Integration, WebhookIntegration
from bsky_backfill.dispatch.ledger import SqlDispatchLedger, open_ledger
from bsky_backfill.dispatch.metrics import DispatchMetrics
from bsky_backfill.dispatch.redis_stream import RedisStreamTarget
from bsky_backfill.dispatch.retry import RetryPolicy, send_with_retries
from bsky_backfill.dispatch.selection import check_dataset, read_uri_list, select_records
from bsky_backfill.dispatch.targets import Delivery, Target, check_receiver
from bsky_backfill.dispatch.webhook import WebhookTarget
from bsky_backfill.errors import BackfillError, ConfigError, RetryableError
from bsky_backfill.state.sql.engine import StoreOptions

__all__ = [
    "DispatchOutcome",
    "IntegrationOutcome",
    "OnProgress",
    "open_target",
    "run_dispatch",
    "state_location",
]

logger = structlog.get_logger(__name__)

OnProgress = Callable[[str, int], None]
"""Told ``(integration, records acknowledged so far in this run)`` after each batch."""


@dataclass(frozen=True, slots=True)
class IntegrationOutcome:
    """How one integration's run ended: records ``sent`` (acknowledged in this run) in
    ``batches``, ``skipped`` (acknowledged by earlier runs), ``resent`` (records of
    batches a dead run left open, sent again), ``acknowledged`` (all runs), and the
    ``error`` that stopped it (None: done)."""

    name: str
    sent: int
    batches: int
    skipped: int
    resent: int
    acknowledged: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    """How a dispatch run ended, per integration."""

    dispatch: str
    integrations: tuple[IntegrationOutcome, ...]
    elapsed_seconds: float

    @property
    def failed(self) -> tuple[IntegrationOutcome, ...]:
        """The integrations that stopped with an error."""
        return tuple(i for i in self.integrations if i.error is not None)


def state_location(config: DispatchConfig) -> tuple[str | Path, StoreOptions]:
    """The bookkeeping's database: ``state_url`` (with ``state_schema``), else the SQLite
    file ``<dataset>/_state/dispatch.sqlite``."""
    if config.state_url is not None:
        return config.state_url, StoreOptions(schema=config.state_schema)
    return Path(config.dataset) / "_state" / "dispatch.sqlite", StoreOptions()


async def open_target(spec: Integration, *, allow_private: bool) -> Target:
    """The target for ``spec``, its receiver's address checked first; the caller closes
    it. Raises ``RefusedAddress`` for a receiver at an address that is not allowed."""
    await check_receiver(spec.url, allow_private=allow_private)
    if isinstance(spec, WebhookIntegration):
        return WebhookTarget(spec, allow_private=allow_private)
    return RedisStreamTarget(spec)


async def run_dispatch(
    config: DispatchConfig,
    *,
    metrics: DispatchMetrics | None = None,
    on_progress: OnProgress | None = None,
) -> DispatchOutcome:
    """Send what ``config`` selects to every integration; see the module docstring.

    Raises ``ConfigError`` before sending anything when the dataset or the URI list is
    missing, and the store's errors when the bookkeeping cannot be opened; an error of
    one integration is in its outcome instead.
    """
    started = time.monotonic()
    metrics = metrics or DispatchMetrics(config.name)
    check_dataset(Path(config.dataset))
    uris = read_uri_list(config.select.uris) if config.select.uris is not None else None
    target, options = state_location(config)
    if isinstance(target, Path):
        target.parent.mkdir(exist_ok=True)
    with structlog.contextvars.bound_contextvars(dispatch=config.name):
        logger.info(
            "dispatch.started",
            dataset=str(config.dataset),
            integrations=[spec.name for spec in config.integrations],
        )
        run = _Run(config, metrics, uris, on_progress)
        async with (
            open_ledger(target, options) as ledger,
            asyncio.TaskGroup() as group,
        ):
            tasks = [
                group.create_task(run.integration(ledger, spec)) for spec in config.integrations
            ]
        outcome = DispatchOutcome(
            config.name, tuple(task.result() for task in tasks), time.monotonic() - started
        )
        logger.info(
            "dispatch.finished",
            seconds=round(outcome.elapsed_seconds, 3),
            sent={i.name: i.sent for i in outcome.integrations},
            failed=[i.name for i in outcome.failed],
        )
    return outcome


@dataclass(frozen=True)
class _Run:
    """What every integration of one run shares."""

    config: DispatchConfig
    metrics: DispatchMetrics
    uris: frozenset[str] | None
    on_progress: OnProgress | None

    async def integration(self, ledger: SqlDispatchLedger, spec: Integration) -> IntegrationOutcome:
        """One integration's run; its errors end up in the outcome, not raised."""
        with structlog.contextvars.bound_contextvars(integration=spec.name):
            key = await ledger.target(self.config.name, spec.name)
            abandoned, resent = await ledger.abandon_open(key)
            if abandoned:
                self.metrics.abandoned(spec.name, abandoned)
                logger.warning("dispatch.resending", batches=abandoned, records=resent)
            counts = _Counts()
            error = None
            try:
                await self._send_all(ledger, key, spec, counts)
            except ConfigError:
                raise  # not this integration's problem: the whole run's input is bad
            except BackfillError as exc:
                error = f"{type(exc).__name__}: {exc}"
                await ledger.abandon_open(key)
                logger.error("dispatch.failed", error=error, sent=counts.sent)
            totals = await ledger.totals(key)
            return IntegrationOutcome(
                spec.name,
                counts.sent,
                counts.batches,
                counts.skipped,
                resent,
                totals.acknowledged,
                error,
            )

    async def _send_all(
        self, ledger: SqlDispatchLedger, key: int, spec: Integration, counts: _Counts
    ) -> None:
        config = self.config
        policy = RetryPolicy.of(spec)
        chunks = select_records(Path(config.dataset), config.select, self.uris)

        def skipped(count: int) -> None:
            counts.skipped += count
            self.metrics.records(spec.name, "skipped", count)

        def retrying(retry: int, error: RetryableError, delay: float) -> None:
            self.metrics.retry(spec.name, type(error).__name__)
            logger.warning(
                "dispatch.retry", attempt=retry + 1, error=str(error), delay=round(delay, 3)
            )

        target = await open_target(spec, allow_private=config.network.allow_private_addresses)
        try:
            async for records in unsent_batches(
                chunks,
                functools.partial(ledger.acknowledged, key),
                size=config.batch_size,
                limit=config.select.max_records,
                on_skipped=skipped,
            ):
                began = time.monotonic()
                seq = await ledger.open_batch(key, len(records))
                delivery = Delivery(config.name, spec.name, seq, records)
                try:
                    await send_with_retries(target, delivery, policy, on_retry=retrying)
                except BackfillError:
                    self.metrics.batch(spec.name, "failed")
                    self.metrics.records(spec.name, "failed", len(records))
                    raise
                await ledger.acknowledge(key, seq, [record.key for record in records])
                self.metrics.batch(spec.name, "acknowledged", time.monotonic() - began)
                self.metrics.records(spec.name, "acknowledged", len(records))
                counts.sent += len(records)
                counts.batches += 1
                logger.debug("dispatch.batch", batch=seq, records=len(records))
                if self.on_progress is not None:
                    self.on_progress(spec.name, counts.sent)
        finally:
            await target.aclose()


@dataclass
class _Counts:
    sent: int = 0
    batches: int = 0
    skipped: int = 0
