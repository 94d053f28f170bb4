"""Cancel flags in the real Redis on 127.0.0.1:6379, under a fresh key prefix each test."""

from __future__ import annotations

import asyncio

import pytest

from bsky_backfill.distributed.control import CancelFlags, Lease
from bsky_backfill.errors import StoreUnavailable
from tests.support.redis import REDIS_URL as REDIS
from tests.support.redis import fresh_prefix, require_redis


@pytest.fixture
def prefix() -> str:
    require_redis()
    return fresh_prefix()


async def test_a_raised_flag_is_seen_by_another_client_until_cleared(prefix: str) -> None:
    async with CancelFlags.open(REDIS, prefix) as one, CancelFlags.open(REDIS, prefix) as two:
        assert not await two.is_cancelled("job")
        await one.cancel("job")
        assert await two.is_cancelled("job")
        assert not await two.is_cancelled("other-job")
        await two.clear("job")
        assert not await one.is_cancelled("job")


async def test_wait_returns_soon_after_the_flag_is_raised(prefix: str) -> None:
    async with CancelFlags.open(REDIS, prefix) as flags:
        waiting = asyncio.create_task(flags.wait("job"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await flags.cancel("job")
        await asyncio.wait_for(waiting, timeout=2)
        await flags.clear("job")


async def test_flags_of_other_prefixes_are_separate(prefix: str) -> None:
    async with (
        CancelFlags.open(REDIS, prefix) as mine,
        CancelFlags.open(REDIS, prefix + "-other") as theirs,
    ):
        await theirs.cancel("job")
        assert not await mine.is_cancelled("job")
        await theirs.clear("job")


async def test_redis_unreachable_is_a_store_unavailable_error() -> None:
    async with CancelFlags.open("redis://127.0.0.1:1/0", "p") as flags:
        with pytest.raises(StoreUnavailable, match="Redis unavailable"):
            await flags.is_cancelled("job")


async def test_a_shard_lease_is_held_by_one_run_renewed_while_it_runs_then_freed(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Lease, "TTL_SECONDS", 1.5)  # renewed 7 times per TTL
    monkeypatch.setattr(Lease, "RENEW_SECONDS", 0.2)
    async with CancelFlags.open(REDIS, prefix) as one, CancelFlags.open(REDIS, prefix) as two:
        first, second = Lease(one, "task-1"), Lease(two, "task-1")
        assert await first.acquire()
        async with first.kept():
            await asyncio.sleep(2.0)  # past the TTL: renewals keep it
            assert not await second.acquire()
            assert await Lease(two, "task-2").acquire()  # another task's lease
        assert await second.acquire()  # released when the run ends


async def test_a_dead_runs_lease_lapses(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Lease, "TTL_SECONDS", 0.3)
    async with CancelFlags.open(REDIS, prefix) as flags:
        assert await Lease(flags, "task").acquire()  # never renewed: the run died
        await asyncio.sleep(0.5)
        assert await Lease(flags, "task").acquire()


async def test_a_lapsed_lease_is_lost_and_its_end_leaves_the_new_holders_lease(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Lease, "TTL_SECONDS", 0.3)
    monkeypatch.setattr(Lease, "RENEW_SECONDS", 0.6)  # too late: the lease lapses first
    async with CancelFlags.open(REDIS, prefix) as flags:
        stalled, successor = Lease(flags, "task"), Lease(flags, "task")
        assert await stalled.acquire()
        async with stalled.kept():
            await asyncio.sleep(0.4)
            assert await successor.acquire()
            await asyncio.wait_for(stalled.lost.wait(), timeout=2)
        assert await successor.held_elsewhere(), "the stalled run's end kept the new lease"
