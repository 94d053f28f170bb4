"""The Celery app: broker, queue and the delivery settings that make a killed worker's
task come back.

A task is acknowledged only when it ends (``acks_late``), a task whose worker process
died is rejected back to the queue (``task_reject_on_worker_lost``), and each worker
takes one task at a time (prefetch 1), so a kill -9 loses at most the tasks in flight,
which Redis hands out again after ``visibility_timeout``. The timeout must be longer
than the longest task, or a task is handed out again while it runs: shard tasks stop
claiming after a third of it, and a copy handed out while the first still runs sees the
first's lease and does nothing (``control.Lease``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from celery import Celery

from bsky_backfill.observability.metrics import JobsMetrics

__all__ = ["BROKER_ENV", "BrokerSettings", "broker_url", "celery_app"]

BROKER_ENV: Final = "BSKY_BACKFILL_BROKER"
_DEFAULT_BROKER: Final = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """``url``: the Redis broker (also the result backend). ``queue``: the queue workers
    consume and jobs are sent to. ``visibility_timeout``: seconds before an unacknowledged
    task is handed out again. ``key_prefix``: every broker key starts with it."""

    url: str = _DEFAULT_BROKER
    queue: str = "bsky-backfill"
    visibility_timeout: float = 600.0
    key_prefix: str = ""


def broker_url(given: str | None = None) -> str:
    """``given``, else ``$BSKY_BACKFILL_BROKER``, else Redis on 127.0.0.1."""
    return given or os.environ.get(BROKER_ENV) or _DEFAULT_BROKER


def celery_app(settings: BrokerSettings, metrics: JobsMetrics | None = None) -> Celery:
    """A Celery app for ``settings`` with the job's tasks registered; ``metrics``: where a
    worker's tasks count their requests, repos... (its ``--metrics-port``)."""
    app = Celery("bsky_backfill", broker=settings.url, backend=settings.url)
    transport: dict[str, object] = {
        "visibility_timeout": settings.visibility_timeout,
        # kombu's defaults sweep for orphaned tasks every 10 x 10 s; this: every second.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    if settings.key_prefix:
        transport["global_keyprefix"] = settings.key_prefix
    app.conf.update(
        task_acks_late=True,
        task_track_started=True,  # the coordinator tells "queued" from "running"
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    from bsky_backfill.distributed import tasks

    tasks.register(app, metrics)
    return app
