"""Every Redis call of the distributed runner goes through :func:`redis_call`: Redis
errors become :class:`~bsky_backfill.errors.StoreUnavailable`, and a cancellation is
never lost.

redis-py's asyncio client (8.x) can swallow a ``CancelledError`` that arrives while a
command is in flight: the command returns its answer, or fails as "connection closed",
and the task goes on as if never cancelled. A loop that polls Redis then never stops
when told to, and whoever waits for it waits forever (a shard task hung after its work
was done, holding its lease, so the coordinator never saw it end). Measured: 79 of 300
cancels at random instants of a polling loop were swallowed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

from bsky_backfill.aio import keeping_cancellation
from bsky_backfill.errors import StoreUnavailable

__all__ = ["redis_call"]

_T = TypeVar("_T")


async def redis_call(request: Awaitable[_T], *, what: str, host: str | None = None) -> _T:
    """``request``'s answer. Raises ``StoreUnavailable`` naming ``what`` for a Redis or
    network error, and ``CancelledError`` when the task was cancelled during the call,
    whatever the client made of it (:func:`~bsky_backfill.aio.keeping_cancellation`)."""
    try:
        return await keeping_cancellation(request)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"Redis unavailable for {what}: {exc}", host=host) from exc
