"""Coordination through Redis: cancel flags and shard leases.

Cancel flags: the coordinator (or ``bsky-backfill cancel``) raises one, every worker's
shard task watches it and stops within a second. A flag stays until the job is started
again (the coordinator clears it on start), so a shard task still queued when the job
was cancelled returns at once when a worker takes it.

Shard leases: a shard task holds a short lease on its task id while it runs, renewed
every second. If the broker hands the task out again while it still runs (it outlived
the visibility timeout), the second copy sees the lease and returns at once instead of
taking back the live run's claims. A killed run's lease lapses within seconds, so its
redelivered copy goes ahead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bsky_backfill.errors import StoreUnavailable

__all__ = ["POLL_SECONDS", "CancelFlags", "ShardLease"]

_T = TypeVar("_T")

POLL_SECONDS: Final = 0.5
_TTL_SECONDS: Final = 7 * 24 * 3600


class CancelFlags:
    """Per-job cancel flags under ``{prefix}:cancel:{job_id}``."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, prefix: str) -> AsyncIterator[CancelFlags]:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        try:
            yield cls(client, prefix)
        finally:
            await client.aclose()

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    async def cancel(self, job_id: str) -> None:
        """Raise the job's flag."""
        await self.call(self.client.set(self._key(job_id), "1", ex=_TTL_SECONDS))

    async def clear(self, job_id: str) -> None:
        """Lower it (the job is starting again)."""
        await self.call(self.client.delete(self._key(job_id)))

    async def is_cancelled(self, job_id: str) -> bool:
        return bool(await self.call(self.client.exists(self._key(job_id))))

    async def wait(self, job_id: str) -> None:
        """Return once the job's flag is raised (polled every ``POLL_SECONDS``)."""
        while not await self.is_cancelled(job_id):  # noqa: ASYNC110 - a flag in Redis, polled
            await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    async def call(request: Awaitable[_T]) -> _T:
        """``request``'s answer; Redis errors become ``StoreUnavailable``."""
        try:
            return await request
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable for cancel flags: {exc}") from exc


class ShardLease:
    """A lease on one shard task id, held while ``async with lease.held():`` runs."""

    TTL_SECONDS: Final = 5.0
    RENEW_SECONDS: Final = 1.0

    def __init__(self, flags: CancelFlags, task_id: str) -> None:
        self.client = flags.client
        self._key = f"{flags.prefix}:lease:{task_id}"
        self._token = uuid.uuid4().hex
        self._renew = self.client.register_script(_RENEW)

    async def acquire(self) -> bool:
        """True if this run holds the lease now; False if a live run holds it."""
        ttl = int(self.TTL_SECONDS * 1000)
        taken = await CancelFlags.call(self.client.set(self._key, self._token, nx=True, px=ttl))
        return bool(taken)

    @asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the acquired lease every second while the block runs; release it after."""
        renewing = asyncio.create_task(self._keep_renewing())
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await CancelFlags.call(self.client.delete(self._key))

    async def _keep_renewing(self) -> None:
        ttl = int(self.TTL_SECONDS * 1000)
        while True:
            await asyncio.sleep(self.RENEW_SECONDS)
            await CancelFlags.call(self._renew(keys=[self._key], args=[self._token, ttl]))


# Extend the lease only if this run still holds it (compare and set, atomically).
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
