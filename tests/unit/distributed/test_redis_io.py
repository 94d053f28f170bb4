"""A cancellation that lands while a Redis command is in flight stops the task, even
though redis-py's asyncio client sometimes swallows it."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from bsky_backfill.distributed.control import CancelFlags, Lease
from bsky_backfill.distributed.redis_io import redis_call
from bsky_backfill.errors import StoreUnavailable
from tests.support.redis import REDIS_URL as REDIS
from tests.support.redis import fresh_prefix, require_redis


@pytest.fixture
def prefix() -> str:
    require_redis()
    return fresh_prefix()


async def test_every_cancel_of_a_redis_polling_loop_stops_it(prefix: str) -> None:
    client = aioredis.from_url(REDIS)

    async def poll() -> None:
        while True:
            await redis_call(client.exists(f"{prefix}:x"), what="a test")

    rng = random.Random(7)
    try:
        for _ in range(200):
            task = asyncio.create_task(poll())
            await asyncio.sleep(rng.uniform(0, 0.003))  # often mid-command
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert done, "a cancelled poller went on"
            assert task.cancelled() or isinstance(task.exception(), StoreUnavailable)
    finally:
        await client.aclose()


async def test_a_kept_lease_is_given_back_however_its_renewal_is_cancelled(prefix: str) -> None:
    rng = random.Random(11)
    async with CancelFlags.open(REDIS, prefix) as flags:
        for n in range(8):
            lease = Lease(flags, f"run-{n}")
            assert await lease.acquire()
            async with asyncio.timeout(10), lease.kept():
                await asyncio.sleep(rng.uniform(0.9, 1.1))  # around a renewal
            assert not await Lease(flags, f"run-{n}").held_elsewhere()


async def test_redis_errors_become_store_unavailable_naming_what() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        with pytest.raises(StoreUnavailable, match="Redis unavailable for a test"):
            await redis_call(client.ping(), what="a test")
    finally:
        await client.aclose()
