"""Dispatches run by the API server: one asyncio task per dispatch name at a time.

Two runs of one dispatch at once would both send what neither has acknowledged yet, so
a second start while one runs is refused (``DispatchAlreadyRunning``). The outcome is
logged (``dispatch.finished`` / ``dispatch.failed``) and kept for :meth:`running`; the
bookkeeping in the state store is what a later run resumes from. A server's dispatches
serve no metrics port of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from bsky_backfill.dispatch.config import DispatchConfig
from bsky_backfill.dispatch.runner import DispatchOutcome, run_dispatch
from bsky_backfill.errors import StoreError

__all__ = ["DispatchAlreadyRunning", "DispatchTasks", "RunDispatch"]

logger = structlog.get_logger(__name__)

RunDispatch = Callable[[DispatchConfig], Coroutine[Any, Any, DispatchOutcome]]
"""``run_dispatch``'s shape, as the server calls it."""


class DispatchAlreadyRunning(StoreError):
    """A dispatch of this name is running on this server already."""


class DispatchTasks:
    """Starts dispatches as tasks of the running event loop; see the module docstring."""

    def __init__(self, run: RunDispatch = run_dispatch) -> None:
        self._run = run
        self._tasks: dict[str, asyncio.Task[DispatchOutcome]] = {}

    def start(self, config: DispatchConfig) -> None:
        """Start ``config``'s dispatch. Raises ``DispatchAlreadyRunning``."""
        if config.name in self.running():
            raise DispatchAlreadyRunning(f"dispatch {config.name!r} is running already")
        task = asyncio.create_task(self._run(config), name=f"dispatch-{config.name}")
        task.add_done_callback(_log_end)
        self._tasks[config.name] = task

    def running(self) -> list[str]:
        """The names of the dispatches under way."""
        return sorted(name for name, task in self._tasks.items() if not task.done())

    async def aclose(self) -> None:
        """Cancel every dispatch and wait for them (a cancelled batch is resent later)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _log_end(task: asyncio.Task[DispatchOutcome]) -> None:
    """Log a dispatch that ended in an error of its own (its outcome it logs itself)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error(
            "dispatch.failed", task=task.get_name(), error=f"{type(error).__name__}: {error}"
        )
