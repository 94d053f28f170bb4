"""The Redis stream target against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bsky_backfill.dispatch.config import RedisIntegration
from bsky_backfill.dispatch.redis_stream import RedisStreamTarget
from bsky_backfill.dispatch.targets import DeliveryRefused
from bsky_backfill.errors import HostUnavailable
from tests.support.redis import REDIS_URL, fresh_prefix, require_redis
from tests.unit.dispatch.test_webhook import DELIVERY


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    require_redis()
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield redis
    await redis.aclose()


def spec(stream: str, **extra: object) -> RedisIntegration:
    return RedisIntegration(name="q", type="redis", url=REDIS_URL, stream=stream, **extra)  # type: ignore[arg-type]


async def test_each_record_is_one_entry(client: aioredis.Redis) -> None:
    stream = fresh_prefix()
    target = RedisStreamTarget(spec(stream))
    try:
        await target.send(DELIVERY)
    finally:
        await target.aclose()
    entries = await client.xrange(stream)
    await client.delete(stream)
    assert [(f["uri"], f["cid"]) for _, f in entries] == [r.key for r in DELIVERY.records]
    first = entries[0][1]
    assert (first["dispatch"], first["batch"]) == ("d", "7")
    assert json.loads(first["record"])["text"] == "post 1"


async def test_an_error_reply_is_a_refusal(client: aioredis.Redis) -> None:
    key = fresh_prefix()
    await client.set(key, "not a stream")
    target = RedisStreamTarget(spec(key))
    try:
        with pytest.raises(DeliveryRefused, match="WRONGTYPE"):
            await target.send(DELIVERY)
    finally:
        await target.aclose()
        await client.delete(key)


async def test_no_server_is_retryable() -> None:
    target = RedisStreamTarget(
        RedisIntegration(name="q", type="redis", url="redis://127.0.0.1:9/0", stream="s")
    )
    try:
        with pytest.raises(HostUnavailable):
            await target.send(DELIVERY)
    finally:
        await target.aclose()
