"""Per-host rate limits shared by every worker of a cluster, kept in Redis.

Many processes on many machines fetch from the same hosts; each host's budget must hold
for all of them together. A :class:`SharedHostLimiter` is a
:class:`~bsky_backfill.core.limits.HostLimiter` (same decisions from headers, 429s and
trust) whose timing state lives in Redis, under ``{prefix}:limit:{scope}:{host}:``:

- ``tat``: the GCRA theoretical arrival time; each slot reserves the next interval, so
  the slots of all workers together are spaced at the host's rate;
- ``rate``: the host's rate as last learnt from headers by any worker; it expires at the
  window's reset, after which each worker falls back to its own;
- ``paused``: paused-until; it only ever moves later, so a 429 seen by one pauses all.

``scope`` is ``cluster`` (one budget for the whole cluster) or an egress-IP identifier
(one budget per egress address). Times are Redis server time (``TIME`` inside the
script), so machines with skewed clocks agree. Every key expires: ``paused`` when the
pause ends, ``rate`` at the reset (at most 15 minutes on), ``tat`` 15 minutes after the
last reserved slot.

Per process stay ``max_in_flight``, the count of requests sent since the last headers
(a worker that counts the announced quota spent pauses everyone: the cluster sent at
least as many) and the trust in the host's headers (a worker that caught the host
overstating its limit publishes a lower rate, which another worker's headers may raise
again until a 429 teaches it too).

Redis being unreachable raises :class:`~bsky_backfill.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from bsky_backfill.core.limits import HostLimiter, LimiterOptions, extended_pause
from bsky_backfill.distributed.redis_io import redis_call
from bsky_backfill.errors import StoreUnavailable

__all__ = ["RedisPace", "SharedHostLimiter", "SharedLimiters"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Three of the reference PDS's 5-minute windows: long enough that a busy host's state
# never lapses, short enough that a finished job leaves nothing behind for long.
_KEY_TTL: Final = 900.0

# KEYS: tat, rate, paused. ARGV: own rate (req/s, used while no shared rate is set), new
# rate (0: none) and its hold (ms), pause (ms, 0: none), restart (0/1), take a slot (0/1),
# key TTL (ms). Times are server milliseconds. Returns, as strings: ms to wait for the
# slot, the rate used, ms the shared rate still holds (<= 0: none), ms of pause left.
_PACE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function put(key, value, ttl)
  redis.call('SET', key, string.format('%.3f', value), 'PX',
             string.format('%d', math.max(1, math.ceil(ttl))))
end
local own, new_rate, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local pause, ttl = tonumber(ARGV[4]), tonumber(ARGV[7])
if new_rate > 0 and hold > 0 then put(KEYS[2], new_rate, hold) end
local paused_until = tonumber(redis.call('GET', KEYS[3])) or 0
if pause > 0 and now + pause > paused_until then
  paused_until = now + pause
  put(KEYS[3], paused_until, pause)
end
local rate = tonumber(redis.call('GET', KEYS[2])) or own
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
if ARGV[5] == '1' and tat > now then
  tat = now
  put(KEYS[1], tat, ttl)
end
local wait = 0
if ARGV[6] == '1' then
  local slot = math.max(tat, now, paused_until)
  tat = slot + 1000 / rate
  put(KEYS[1], tat, tat - now + ttl)
  wait = slot - now
end
return {string.format('%.3f', wait), string.format('%.6f', rate),
        tostring(redis.call('PTTL', KEYS[2])),
        string.format('%.3f', math.max(paused_until - now, 0))}
"""


async def _redis(request: Awaitable[_T], host: str | None = None) -> _T:
    return await redis_call(request, what="rate limits", host=host)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


@dataclass(slots=True)
class _Pending:
    """Changes made locally and not yet sent; deadlines in local monotonic seconds, sent
    as "ms from now" so the other machines' clocks never matter."""

    pause_until: float = 0.0
    rate: float | None = None
    rate_until: float = 0.0
    restart: bool = False

    def __bool__(self) -> bool:
        return self.pause_until > 0 or self.rate is not None or self.restart

    def then(self, newer: _Pending) -> _Pending:
        """Both, ``newer`` winning on the rate: what is left after a failed send."""
        if newer.rate is None:
            newer.rate, newer.rate_until = self.rate, self.rate_until
        newer.pause_until = max(self.pause_until, newer.pause_until)
        newer.restart = newer.restart or self.restart
        return newer


class RedisPace:
    """A :class:`~bsky_backfill.core.limits.Pace` in Redis under ``keys`` (tat, rate,
    paused). A local mirror answers ``rate`` and ``paused`` without a round trip and
    takes ``pause`` / ``set_rate`` / ``restart`` at once; they reach Redis with the next
    script call: a reservation, or :meth:`flush` (``notify`` asks the owner to flush soon).
    Raises :class:`StoreUnavailable` when Redis cannot be reached; nothing is lost then,
    the next call sends it again.
    """

    def __init__(
        self,
        script: AsyncScript,
        keys: tuple[str, str, str],
        rate: float,
        *,
        host: str,
        notify: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script, self._keys, self._host = script, keys, host
        self._notify, self._clock = notify, clock
        self._own_rate = rate  # what this process decided last; used while Redis has none
        self._rate = rate
        self._rate_until = 0.0  # until when ``_rate`` (the shared rate) holds
        self._paused_until = 0.0
        self._pending = _Pending()

    @property
    def rate(self) -> float:
        return self._rate if self._clock() < self._rate_until else self._own_rate

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    async def reserve(self) -> float:
        return await self._run(take=True)

    async def still_paused(self) -> bool:
        if not self.paused:
            await self._run(take=False)  # another worker's 429 shows only in Redis
        return self.paused

    async def flush(self) -> None:
        """Send what changed locally, if anything."""
        if self._pending:
            await self._run(take=False)

    def pause(self, seconds: float) -> float:
        self._paused_until, added = extended_pause(self._paused_until, self._clock(), seconds)
        if added:
            self._pending.pause_until = max(self._pending.pause_until, self._paused_until)
            self._notify()
        return added

    def set_rate(self, rate: float, hold: float | None) -> None:
        until = self._clock() + min(_KEY_TTL if hold is None else hold, _KEY_TTL)
        self._own_rate = self._rate = rate
        self._rate_until = self._pending.rate_until = until
        self._pending.rate = rate
        self._notify()

    def restart(self) -> None:
        self._pending.restart = True
        self._notify()

    async def _run(self, *, take: bool) -> float:
        """One atomic script call: apply what is pending, reserve a slot if ``take``,
        refresh the mirror; returns seconds to wait for the slot."""
        pending, self._pending = self._pending, _Pending()
        now = self._clock()
        args = (
            self._own_rate,
            pending.rate or 0,
            _ms(pending.rate_until - now),
            _ms(pending.pause_until - now),
            int(pending.restart),
            int(take),
            _ms(_KEY_TTL),
        )
        try:
            reply = await _redis(self._script(keys=self._keys, args=args), self._host)
        except StoreUnavailable:
            self._pending = pending.then(self._pending)
            raise
        wait_ms, rate, rate_ttl_ms, pause_left_ms = (float(value) for value in reply)
        now = self._clock()
        self._rate, self._rate_until = rate, now + rate_ttl_ms / 1000
        self._paused_until = max(self._paused_until, now + pause_left_ms / 1000)
        return wait_ms / 1000


class SharedHostLimiter(HostLimiter):
    """A :class:`HostLimiter` on a :class:`RedisPace`: the same interface and decisions,
    one budget for every limiter of the same host, prefix and scope. Get it from
    :meth:`SharedLimiters.get`. ``slot()`` raises :class:`StoreUnavailable` when Redis
    cannot be reached.
    """

    def __init__(self, pace: RedisPace, options: LimiterOptions = LimiterOptions()) -> None:
        super().__init__(options, pace=pace)
        self._shared = pace

    async def flush(self) -> None:
        """Send what ``observe`` / ``rate_limited`` changed to Redis now."""
        await self._shared.flush()


class SharedLimiters:
    """One :class:`SharedHostLimiter` per host, on one Redis client that this object owns
    and :meth:`aclose` closes. Keys live under ``{prefix}:limit:{scope}:{host}:``.

    A background task (started by the first :meth:`get`, so call that on the event loop)
    sends local changes as soon as they happen: a 429 seen here pauses the other workers
    at once, not at this process's next request. :meth:`aclose` stops it and sends what
    is left.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        scope: str,
        options: LimiterOptions = LimiterOptions(),
    ) -> None:
        if not prefix or not scope:
            raise ValueError("a shared limiter needs a key prefix and a scope")
        self._client = client
        self._script = client.register_script(_PACE_SCRIPT)
        self._base = f"{prefix}:limit:{scope}"
        self._options = options
        self._limiters: dict[str, SharedHostLimiter] = {}
        self._changed = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, prefix: str, scope: str, options: LimiterOptions = LimiterOptions()
    ) -> AsyncIterator[SharedLimiters]:
        """Connect to ``url`` and check that Redis answers (else :class:`StoreUnavailable`);
        closes everything on exit."""
        client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        limiters = cls(client, prefix, scope, options)
        try:
            await _redis(client.ping())
            yield limiters
        finally:
            await limiters.aclose()

    def get(self, host: str) -> SharedHostLimiter:
        """The limiter of ``host`` (the same object on every call)."""
        if self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish())
        if host not in self._limiters:
            keys = (
                f"{self._base}:{host}:tat",
                f"{self._base}:{host}:rate",
                f"{self._base}:{host}:paused",
            )
            pace = RedisPace(
                self._script, keys, self._options.rate, host=host, notify=self._changed.set
            )
            self._limiters[host] = SharedHostLimiter(pace, self._options)
        return self._limiters[host]

    async def flush(self) -> None:
        """Send every limiter's local changes now; raises :class:`StoreUnavailable`."""
        for limiter in list(self._limiters.values()):
            await limiter.flush()

    async def aclose(self) -> None:
        """Stop the background sender, send what is left (a failure is logged: the pause
        it carried still holds here) and close the client. Idempotent."""
        if self._publisher is not None:
            self._publisher.cancel()
            (outcome,) = await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
            if isinstance(outcome, Exception):  # a bug, not the CancelledError we sent
                raise outcome
        try:
            await self.flush()
        except StoreUnavailable as exc:
            logger.warning("rate-limit changes not shared: %s", exc)
        await self._client.aclose()

    async def _publish(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.flush()
            except StoreUnavailable as exc:
                # Kept pending: the next reservation (which raises to its caller if Redis
                # is still away) or the next change sends it again.
                logger.warning("rate-limit changes not shared yet: %s", exc)
