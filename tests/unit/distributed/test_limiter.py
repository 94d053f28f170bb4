"""The shared limiter against the real Redis on 127.0.0.1:6379 (skipped locally without it,
failed under CI). Each test uses a fresh key prefix and removes its keys afterwards.

Timing assertions hold in the safe direction only: a slot may start late on a busy
machine, never early, so lower bounds are exact and upper bounds are generous.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from bsky_backfill.atproto.ratelimit import RateLimitInfo
from bsky_backfill.core.limits import LimiterOptions
from bsky_backfill.distributed.limiter import SharedHostLimiter, SharedLimiters
from bsky_backfill.errors import StoreUnavailable
from tests.support import require

URL = "redis://127.0.0.1:6379/0"
HOST = "pds.example.com"
# Timer and float rounding only: a slot is never started before its reserved time.
EPSILON = 0.02


def _redis_answers() -> bool:
    client = redis.Redis.from_url(URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require(_redis_answers(), f"Redis at {URL}")
    name = f"test-{uuid.uuid4().hex}"
    yield name
    client = aioredis.Redis.from_url(URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def opened(
    prefix: str, scope: str = "cluster", **options: float
) -> contextlib.AbstractAsyncContextManager[SharedLimiters]:
    """A separate client and limiter set, as a separate worker process would have."""
    return SharedLimiters.open(URL, prefix, scope, LimiterOptions(**options))


async def start_times(limiters: list[SharedHostLimiter], count: int) -> list[float]:
    """Start ``count`` requests spread round-robin over ``limiters``; when each began."""
    starts: list[float] = []

    async def one(limiter: SharedHostLimiter) -> None:
        async with limiter.slot():
            starts.append(time.monotonic())

    await asyncio.gather(*(one(limiters[i % len(limiters)]) for i in range(count)))
    return sorted(starts)


def busiest_second(starts: list[float]) -> int:
    """The most starts in any window of one second."""
    return max(sum(1 for s in starts[i:] if s < start + 1.0) for i, start in enumerate(starts))


async def test_separate_clients_together_never_exceed_the_rate(prefix: str) -> None:
    rate, count = 20.0, 60
    async with (
        opened(prefix, rate=rate) as a,
        opened(prefix, rate=rate) as b,
        opened(prefix, rate=rate) as c,
    ):
        began = time.monotonic()
        starts = await start_times([a.get(HOST), b.get(HOST), c.get(HOST)], count)
    assert len(starts) == count
    assert starts[-1] - began >= (count - 1) / rate - EPSILON
    # Unshared, three limiters would start ~60 in the first second; a late wake-up on a
    # busy machine can crowd a few more than 20 into one second, never 60.
    assert busiest_second(starts) <= 1.5 * rate
    assert starts[-1] - began < 20  # paced, not stalled


async def test_a_429_seen_by_one_pauses_the_others(prefix: str) -> None:
    async with opened(prefix) as a, opened(prefix) as b:
        began = time.monotonic()
        a.get(HOST).rate_limited(retry_after=2)
        await a.flush()
        async with b.get(HOST).slot():
            started = time.monotonic()
        assert b.get(HOST).requests == 1
    assert started - began >= 2.5 - EPSILON  # Retry-After plus the whole-second slack


async def test_a_spent_quota_seen_by_one_pauses_the_others_until_the_reset(prefix: str) -> None:
    async with opened(prefix) as a, opened(prefix) as b:
        began = time.monotonic()
        a.get(HOST).observe(RateLimitInfo(remaining=0, reset_at=time.time() + 2))
        await a.flush()
        async with b.get(HOST).slot():
            started = time.monotonic()
    assert started - began >= 2.0 - EPSILON


async def test_a_429_reaches_redis_without_an_explicit_flush(prefix: str) -> None:
    async with opened(prefix) as a:
        a.get(HOST).rate_limited(retry_after=30)
        client = aioredis.Redis.from_url(URL)
        try:
            async with asyncio.timeout(5):
                key = f"{prefix}:limit:cluster:{HOST}:paused"
                while not await client.exists(key):  # noqa: ASYNC110 - polling Redis
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()


async def test_headers_seen_by_one_set_the_rate_of_the_others(prefix: str) -> None:
    async with opened(prefix, rate=20) as a, opened(prefix, rate=20) as b:
        a.get(HOST).observe(RateLimitInfo(remaining=20, reset_at=time.time() + 10))
        assert a.get(HOST).rate == pytest.approx(2.0, rel=0.02)
        await a.flush()
        began = time.monotonic()
        starts = await start_times([b.get(HOST)], 3)
        assert b.get(HOST).rate == pytest.approx(2.0, rel=0.02)
    assert starts[-1] - began >= 2 * 0.5 - EPSILON  # at b's own 20/s: 0.1 s


async def test_each_scope_has_its_own_budget(prefix: str) -> None:
    slow = {"rate": 0.5, "min_rate": 0.2}  # one slot every 2 s
    async with (
        opened(prefix, "egress-a", **slow) as a1,
        opened(prefix, "egress-a", **slow) as a2,
        opened(prefix, "egress-b", **slow) as b,
        opened(prefix, **slow) as cluster,
    ):
        began = time.monotonic()
        async with a1.get(HOST).slot():
            pass
        async with asyncio.timeout(10):  # shared, these would wait 2 s each
            await start_times([b.get(HOST), cluster.get(HOST)], 2)
        elsewhere = time.monotonic() - began
        await start_times([a2.get(HOST)], 1)
        same_scope = time.monotonic() - began
    assert elsewhere < 1.5
    assert same_scope >= 2.0 - EPSILON


async def test_a_pause_stays_in_its_scope(prefix: str) -> None:
    async with (
        opened(prefix, "egress-a") as a1,
        opened(prefix, "egress-a") as a2,
        opened(prefix, "egress-b") as b,
    ):
        began = time.monotonic()
        a1.get(HOST).rate_limited(retry_after=2)
        await a1.flush()
        async with asyncio.timeout(10):
            await start_times([b.get(HOST)], 1)
        elsewhere = time.monotonic() - began
        await start_times([a2.get(HOST)], 1)
        same_scope = time.monotonic() - began
    assert elsewhere < 1.5
    assert same_scope >= 2.5 - EPSILON


async def test_every_key_expires(prefix: str) -> None:
    async with opened(prefix, "egress-a") as limiters:
        limiter = limiters.get(HOST)
        async with limiter.slot():
            pass
        limiter.rate_limited(retry_after=5)
        limiter.observe(RateLimitInfo(remaining=100, reset_at=time.time() + 60))
        await limiters.flush()
    client = aioredis.Redis.from_url(URL, decode_responses=True)
    try:
        keys = {key: await client.pttl(key) async for key in client.scan_iter(f"{prefix}:*")}
    finally:
        await client.aclose()
    base = f"{prefix}:limit:egress-a:{HOST}"
    assert set(keys) == {f"{base}:tat", f"{base}:rate", f"{base}:paused"}
    assert all(0 < ttl <= 1000 * 1000 for ttl in keys.values()), keys
    assert keys[f"{base}:paused"] <= 6000
    assert keys[f"{base}:rate"] <= 61_000


async def test_unreachable_redis_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="Redis unavailable"):
        async with SharedLimiters.open("redis://127.0.0.1:1/0", "test", "cluster"):
            pass


async def test_a_slot_without_redis_is_store_unavailable() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    limiters = SharedLimiters(client, "test", "cluster")
    limiter = limiters.get(HOST)
    limiter.rate_limited(retry_after=1)  # kept locally; sending it fails quietly
    with pytest.raises(StoreUnavailable) as caught:
        async with limiter.slot():
            pass
    assert caught.value.host == HOST
    await limiters.aclose()


_WORKER = """
import asyncio, sys, time
from bsky_backfill.core.limits import LimiterOptions
from bsky_backfill.distributed.limiter import SharedLimiters

async def main(url, prefix, host, start_at, count):
    async with SharedLimiters.open(url, prefix, "cluster", LimiterOptions(rate=20)) as limiters:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        limiter = limiters.get(host)
        for _ in range(count):
            async with limiter.slot():
                print(time.monotonic(), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])))
"""


async def test_worker_processes_together_never_exceed_the_rate(prefix: str) -> None:
    rate, processes, each = 20.0, 3, 15
    start_at = time.monotonic() + 3  # CLOCK_MONOTONIC is shared by the machine's processes
    args = (URL, prefix, HOST, str(start_at), str(each))
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, *args, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(processes)
    ]
    async with asyncio.timeout(60):
        outputs = [await worker.communicate() for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * processes
    starts = sorted(float(line) for out, _ in outputs for line in out.decode().split())
    assert len(starts) == processes * each
    assert starts[-1] - start_at >= (len(starts) - 1) / rate - EPSILON
    assert busiest_second(starts) <= 1.5 * rate
