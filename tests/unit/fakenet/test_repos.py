from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.repos import RepoStore
from bsky_backfill.fakenet.world import Account, World


@pytest.fixture
def world() -> World:
    return World(PopulationSpec(seed=3, accounts=40, hosts=2))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def busy_account(world: World) -> Account:
    account = next(a for a in world if 30 <= a.seed.record_count <= 300)
    # Collections whose names are prefixes of each other must not bleed into one another.
    for collection in ("app.bsky.feed.lik", "app.bsky.feed.like2", "app.bsky.feed.like-x"):
        for n in range(3):
            world.put_record(account.did, collection, f"3m5aaaaaaaa{n}2", {"n": n})
    return account


def oracle(
    account: Account, collection: str, limit: int, cursor: str | None, reverse: bool
) -> list[str]:
    rkeys = sorted(
        k.split("/", 1)[1] for k in account.current_records() if k.split("/")[0] == collection
    )
    if not reverse:
        rkeys.reverse()
    if cursor is not None:
        rkeys = [r for r in rkeys if (r > cursor if reverse else r < cursor)]
    return rkeys[:limit]


async def test_pages_match_a_brute_force_listing(
    world: World, executor: ThreadPoolExecutor
) -> None:
    store = RepoStore(world, executor)
    account = busy_account(world)
    collections = {k.split("/")[0] for k in account.current_records()} | {"com.example.none"}
    for collection in sorted(collections):
        every = oracle(account, collection, 10_000, None, False)
        cursors = [None, *every[::3], "2222222222222", "zzzzzzzzzzzzz"]
        for reverse in (False, True):
            for cursor in cursors:
                for limit in (1, 2, 50):
                    page = await store.page(account, collection, limit, cursor, reverse)
                    expected = oracle(account, collection, limit, cursor, reverse)
                    assert [rkey for rkey, _, _ in page.records] == expected
                    assert page.cursor == (expected[-1] if expected else None)


async def test_concurrent_requests_share_one_build(
    world: World, executor: ThreadPoolExecutor
) -> None:
    store = RepoStore(world, executor)
    account = next(a for a in world if a.seed.record_count > 50)
    first, second = await asyncio.gather(store.export(account), store.export(account))
    assert first is second
    assert world.cached_export(account) is first
    assert await store.head(account) == first.commit_cid.encode("base32")


async def test_a_change_during_a_build_keeps_the_version_it_started_with(
    world: World, executor: ThreadPoolExecutor
) -> None:
    store = RepoStore(world, executor)
    account = next(a for a in world if a.seed.record_count > 50)
    building = asyncio.ensure_future(store.export(account))
    await asyncio.sleep(0)
    old_rev = account.rev
    world.put_record(account.did, "app.bsky.feed.post", "3m5aaaaaaaaa2", {"text": "x"})
    assert (await building).rev == old_rev
    newer = await store.export(account)
    assert newer.rev == account.rev != old_rev
    assert "app.bsky.feed.post/3m5aaaaaaaaa2" in newer.record_cids
    assert await store.collections(account) == sorted(
        {k.split("/")[0] for k in account.current_records()}
    )
