"""Coordination through Redis: cancel flags and shard leases.

Cancel flags: the coordinator (or ``bsky-backfill cancel``) raises one, every worker's
shard task watches it and stops within a second. A flag stays until the job is started
again (the coordinator clears it on start), so a shard task still queued when the job
was cancelled returns at once when a worker takes it.

Leases: a shard task holds a short lease on its task id while it runs, renewed every
second. If the broker hands the task out again while it still runs (it outlived the
visibility timeout), the second copy sees the lease and returns at once instead of
taking back the live run's claims; the coordinator takes back only the claims of shard
runs whose lease is gone (their worker died). A killed run's lease lapses within
seconds. A job's coordinator holds one too, so two coordinators never run one job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import redis.asyncio as aioredis

from bsky_backfill.distributed.redis_io import redis_call
from bsky_backfill.errors import StoreUnavailable

__all__ = ["POLL_SECONDS", "CancelFlags", "Lease"]

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
        """``request``'s answer; see :func:`~.redis_io.redis_call`."""
        return await redis_call(request, what="cancel flags and leases")


class Lease:
    """A lease named ``name`` (a shard task id, a job's coordinator) held by one run:
    ``acquire``, then ``async with lease.kept():`` renews it every second and gives it
    back after; ``lost`` is set if a renewal found it gone (the run stalled past the TTL
    and another run may have taken over: stop)."""

    TTL_SECONDS: Final = 5.0
    RENEW_SECONDS: Final = 1.0

    def __init__(self, flags: CancelFlags, name: str) -> None:
        self.client = flags.client
        self.lost = asyncio.Event()
        self._key = f"{flags.prefix}:lease:{name}"
        self._token = uuid.uuid4().hex
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    async def held_elsewhere(self) -> bool:
        """Whether a live run holds the lease now (for runs that did not acquire it)."""
        return bool(await CancelFlags.call(self.client.exists(self._key)))

    async def acquire(self) -> bool:
        """True if this run holds the lease now; False if a live run holds it."""
        ttl = int(self.TTL_SECONDS * 1000)
        taken = await CancelFlags.call(self.client.set(self._key, self._token, nx=True, px=ttl))
        return bool(taken)

    @asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the acquired lease while the block runs; give it back after (only if it
        is still this run's: a lapsed lease may be another run's by now)."""
        renewing = asyncio.create_task(self._keep_renewing())
        try:
            yield
        finally:
            renewing.cancel()
            # Bounded all the same: a renewer that never ends must not hold its run.
            await asyncio.wait({renewing}, timeout=self.TTL_SECONDS)
            await CancelFlags.call(self._release(keys=[self._key], args=[self._token]))

    async def _keep_renewing(self) -> None:
        ttl = int(self.TTL_SECONDS * 1000)
        while True:
            await asyncio.sleep(self.RENEW_SECONDS)
            try:
                renewed = await CancelFlags.call(
                    self._renew(keys=[self._key], args=[self._token, ttl])
                )
            except StoreUnavailable:
                renewed = 0  # cannot prove it is still ours
            if not renewed:
                self.lost.set()
                return


# Extend / delete the lease only if this run still holds it (compare and act, atomically).
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
