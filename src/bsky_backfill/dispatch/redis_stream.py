"""The Redis stream target: XADD each record of a batch to one stream, in one MULTI/EXEC.

Each entry's fields: ``uri``, ``cid``, ``did``, ``collection``, ``rkey``, ``created_at``
(RFC 3339, empty when unknown), ``record`` (JSON text), ``dispatch``, ``batch``. The
batch is one transaction, so a batch is in the stream whole or not at all; EXEC
returning acknowledges it. A connection lost after EXEC was sent leaves it unknown
whether the batch landed: it is retried, and consumers dedupe by uri + cid.

Redis errors are translated here, in one place: connection errors and timeouts (a
server loading or failing over included) are ``HostUnavailable``; error replies (wrong
type, out of memory, no permission) are ``DeliveryRefused``.
"""

from __future__ import annotations

import json
from typing import Final

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from bsky_backfill.aio import keeping_cancellation
from bsky_backfill.dispatch.config import RedisIntegration
from bsky_backfill.dispatch.targets import Delivery, DeliveryRefused
from bsky_backfill.errors import HostUnavailable
from bsky_backfill.sinks.rows import rfc3339

__all__ = ["RedisStreamTarget", "entry"]

_SHOWN: Final = 200  # characters of a Redis error kept in ours


def entry(delivery: Delivery, index: int) -> dict[str, str]:
    """The stream entry for ``delivery.records[index]`` (see the module docstring)."""
    record = delivery.records[index]
    return {
        "uri": record.uri,
        "cid": record.cid,
        "did": record.did,
        "collection": record.collection,
        "rkey": record.rkey,
        "created_at": rfc3339(record.created_at) or "",
        "record": json.dumps(json.loads(record.record), separators=(",", ":")),
        "dispatch": delivery.dispatch,
        "batch": str(delivery.seq),
    }


class RedisStreamTarget:
    """XADDs batches to ``spec.stream``; see the module docstring. Closed with ``aclose``."""

    def __init__(self, spec: RedisIntegration) -> None:
        self.name = spec.name
        self._spec = spec
        self._client = aioredis.Redis.from_url(
            spec.url,
            socket_timeout=spec.timeout_seconds,
            socket_connect_timeout=spec.timeout_seconds,
        )

    async def send(self, delivery: Delivery) -> None:
        """XADD every record of ``delivery`` in one transaction; return once it ran."""
        spec = self._spec
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for index in range(len(delivery.records)):
                    pipe.xadd(
                        spec.stream,
                        entry(delivery, index),  # type: ignore[arg-type]
                        maxlen=spec.maxlen,
                        approximate=True,
                    )
                await keeping_cancellation(pipe.execute())  # redis-py may swallow one
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise HostUnavailable(f"Redis: {_brief(exc)}", url=_shown_url(spec.url)) from None
        except redis_errors.RedisError as exc:
            raise DeliveryRefused(f"Redis: {_brief(exc)}", url=_shown_url(spec.url)) from None

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._client.aclose()


def _brief(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:_SHOWN]


def _shown_url(url: str) -> str:
    """``url`` without a password (``redis://:secret@host`` is common)."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//', 1)[0]}//{tail}" if at else url
