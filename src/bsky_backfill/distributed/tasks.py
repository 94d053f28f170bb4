"""The Celery tasks: ``plan_job`` and ``process_shard``, each an ``asyncio.run`` of its
step (:mod:`bsky_backfill.distributed.steps`).

Tasks carry the config's YAML text and the folder its relative paths are read against
(paths must mean the same on every worker: a shared folder or S3). ``${ENV}`` values
are expanded from each worker's own environment, so secrets stay on the workers.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any, Final

from celery import Celery, Task
from celery.exceptions import Ignore

from bsky_backfill.config.loader import load_config_text
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.distributed import steps
from bsky_backfill.observability.logs import job_context
from bsky_backfill.observability.metrics import JobsMetrics

__all__ = ["EGRESS_ENV", "PLAN_TASK", "SHARD_TASK", "egress_id", "register"]

PLAN_TASK: Final = "bsky_backfill.plan_job"
SHARD_TASK: Final = "bsky_backfill.process_shard"
EGRESS_ENV: Final = "BSKY_BACKFILL_EGRESS_ID"


def _config(config_text: str, base_dir: str) -> BackfillConfig:
    return load_config_text(config_text, base_dir=Path(base_dir), environ=os.environ)


def egress_id() -> str:
    """This worker's egress identity for per-egress-IP budgets: ``$BSKY_BACKFILL_EGRESS_ID``
    (set by ``worker --egress-id``), else the host name."""
    return os.environ.get(EGRESS_ENV) or socket.gethostname()


def register(app: Celery, metrics: JobsMetrics | None = None) -> None:
    """Register the job's tasks on ``app``; their figures go to ``metrics`` (None: to
    each task's own, unseen)."""

    @app.task(name=PLAN_TASK)  # type: ignore[untyped-decorator]
    def plan_job(config_text: str, base_dir: str, refresh: bool) -> None:
        config = _config(config_text, base_dir)
        with job_context(config.name):
            asyncio.run(steps.plan_job(config, config_text, refresh=refresh))

    @app.task(name=SHARD_TASK, bind=True)  # type: ignore[untyped-decorator]
    def process_shard(
        task: Task, config_text: str, base_dir: str, budgets: dict[str, int], seconds: float
    ) -> dict[str, Any]:
        config = _config(config_text, base_dir)
        task_id = str(task.request.id)
        job = (
            None
            if metrics is None
            else metrics.for_job(config.name, config.monitoring.host_label_limit)
        )
        shard = steps.process_shard(
            config, task_id, budgets, seconds=seconds, egress_id=egress_id(), metrics=job
        )
        with job_context(config.name):
            report = asyncio.run(shard)
        if report.duplicate:
            # No result for this copy: the live run of the same task id stores its own.
            raise Ignore
        return report.as_dict()
