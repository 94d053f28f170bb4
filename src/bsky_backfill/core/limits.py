"""Per-host request pacing: as fast as the host allows, never faster, pausing only it.

A :class:`HostLimiter` hands out request slots for one PDS host:
- at most ``max_in_flight`` requests at once;
- starts spaced at ``rate`` requests/s (GCRA: each slot is one interval after the last);
- follows the host's own headers: with ``RateLimit-Remaining`` and ``RateLimit-Reset``
  known it spreads the remaining quota evenly over the time left in the window, so it
  neither stalls early nor runs out before the reset;
- on 429 it pauses this host (only) until ``Retry-After`` / the reset, or for an
  exponential backoff and at half its own rate when the host sends no headers at all;
- a host that refuses while its headers claim room advertises more than it allows: it is
  believed less (once per window), and when the refusal's own headers claim that room it
  is paced at the share of its advertised quota it had accepted, a ceiling that clean
  windows do not lift until the host advertises another limit.

The limiter decides what the host's answers imply (rate, pause, trust); a :class:`Pace`
keeps the timing state those decisions act on. :class:`LocalPace` keeps it in this
process; ``distributed.limiter`` keeps it in Redis so that many processes share one
budget per host, with the same decisions.

Time comes from injectable ``clock`` (monotonic seconds), ``wall`` (unix seconds, the
frame of ``RateLimit-Reset``) and ``sleep``, so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

from bsky_backfill.atproto.ratelimit import RateLimitInfo

__all__ = ["HostLimiter", "LimiterOptions", "LocalPace", "Pace", "extended_pause"]

_MIN_BACKOFF: Final = 1.0
# RateLimit-Reset is whole seconds: wait a little past it, or the first request of the
# "next" window can land in the old one and draw a 429.
_RESET_SLACK: Final = 0.5
# Resets this close name the same window (whole-second headers, answers in flight).
_SAME_WINDOW: Final = 1.0
_MAX_BACKOFF: Final = 300.0


@dataclass(frozen=True, slots=True)
class LimiterOptions:
    """``rate``: requests/s before the host's headers say otherwise (the config's
    ``processing.requests_per_second``); ``max_rate`` caps what headers may raise it to;
    ``min_rate`` is the floor after repeated 429s; ``max_in_flight`` caps concurrency.
    """

    rate: float = 10.0
    max_rate: float = 50.0
    min_rate: float = 0.2
    max_in_flight: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.rate <= self.max_rate or self.max_in_flight < 1:
            raise ValueError("need 0 < min_rate <= rate <= max_rate and max_in_flight >= 1")


class Pace(Protocol):
    """Where one host's timing state lives: the GCRA schedule of slots, the current rate
    and the pause. ``pause``, ``set_rate`` and ``restart`` are synchronous because the
    limiter's ``observe`` / ``rate_limited`` are (the runner calls them without awaiting);
    a shared pace applies them locally at once and to the shared state soon after.
    """

    @property
    def rate(self) -> float:
        """Requests per second that slots are spaced at now."""
        ...

    @property
    def paused(self) -> bool:
        """Whether the host is paused, as far as this process knows."""
        ...

    async def reserve(self) -> float:
        """Reserve the next slot (after any pause): seconds until it starts (0: now)."""
        ...

    async def still_paused(self) -> bool:
        """After waiting for a slot: whether a pause began meanwhile (the slot is void)."""
        ...

    def pause(self, seconds: float) -> float:
        """Pause the host until ``seconds`` from now unless already paused longer; returns
        the seconds this added to the pause."""
        ...

    def set_rate(self, rate: float, hold: float | None) -> None:
        """Space later slots at ``rate``; ``hold``: seconds it stays valid (None: until
        changed) — a rate learnt from one window's headers means nothing after its reset."""
        ...

    def restart(self) -> None:
        """A new window: forget slots reserved ahead at the old pace."""
        ...


def extended_pause(paused_until: float, now: float, seconds: float) -> tuple[float, float]:
    """A pause until ``paused_until`` asked to last ``seconds`` from ``now``: the new end
    (a pause only ever moves later) and the seconds of pause that adds."""
    until = now + seconds
    if until <= paused_until:
        return paused_until, 0.0
    return until, until - max(paused_until, now)


class LocalPace:
    """A :class:`Pace` for one process; ``hold`` is moot here, the limiter itself sets a
    new rate when a window rolls over."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._interval = 1.0 / rate
        self._next_slot = 0.0  # monotonic time of the next free slot
        self._paused_until = 0.0

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    async def reserve(self) -> float:
        now = self._clock()
        slot = max(self._next_slot, now, self._paused_until)
        self._next_slot = slot + self._interval
        return slot - now

    async def still_paused(self) -> bool:
        return self.paused

    def pause(self, seconds: float) -> float:
        self._paused_until, added = extended_pause(self._paused_until, self._clock(), seconds)
        return added

    def set_rate(self, rate: float, hold: float | None) -> None:
        self._interval = 1.0 / rate

    def restart(self) -> None:
        self._next_slot = min(self._next_slot, self._clock())


class HostLimiter:
    """Slots for requests to one host. Use ``async with limiter.slot():`` around a request,
    then report the answer with :meth:`observe` (any answer with headers) or
    :meth:`rate_limited` (a 429). ``pace`` holds the timing state (default: a
    :class:`LocalPace` on ``clock``); the trust, backoff and quota bookkeeping stay here.
    """

    def __init__(
        self,
        options: LimiterOptions = LimiterOptions(),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pace: Pace | None = None,
    ) -> None:
        self.options = options
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._pace = pace if pace is not None else LocalPace(options.rate, clock)
        self._base_rate = options.rate  # without headers: AIMD around this
        self._backoff = _MIN_BACKOFF
        self._trust = 1.0  # share of the host's advertised quota we believe; drops on 429
        self._ceiling = 1.0  # share of it the host accepted before refusing (1.0: no lie seen)
        self._limit: int | None = None  # the window's quota the host advertises
        self._used = 0  # of it, the most the host has counted in this window
        self._active = 0  # requests inside a slot right now
        self._room: int | None = None  # quota the last headers left us (None: no headers)
        self._quota: int | None = None  # that quota, less requests sent since
        self._policy_rate: float | None = None  # limit / window from RateLimit-Policy
        self._last_reset: float | None = None
        self._turn = asyncio.Lock()
        self._window_reset: float | None = None
        self._limited_in_window = False
        self._in_flight = asyncio.Semaphore(options.max_in_flight)
        self.requests = 0
        self.rate_limited_count = 0
        self.paused_seconds = 0.0
        self.waits = 0  # slots that were not free at once (pace, pause or quota)
        self.waited_seconds = 0.0

    @property
    def rate(self) -> float:
        """The current pace in requests per second."""
        return self._pace.rate

    @property
    def paused(self) -> bool:
        return self._pace.paused

    @property
    def quota_remaining(self) -> int | None:
        """Requests left in the host's window by its last headers, less those sent since
        (None: the host sent no quota headers)."""
        return self._quota

    async def _wait_turn(self) -> None:
        while True:
            self._roll_window()
            wait = await self._pace.reserve()
            if wait > 0:
                await self._sleep(wait)
                if await self._pace.still_paused():  # a 429 may have paused us meanwhile
                    continue
            if not self._quota_spent():
                return

    def _roll_window(self) -> None:
        """Past the host's reset, a new window starts with its full quota: go back to the
        policy's pace instead of the (often slow) pace of the old window's last answers."""
        if self._window_reset is None or self._wall() < self._window_reset + _RESET_SLACK:
            return
        self._window_reset = None
        self._quota = None
        if self._policy_rate is not None:
            self._set_rate(self._trust * self._policy_rate)
            self._pace.restart()

    def _quota_spent(self) -> bool:
        """True (and the host paused to its reset) when the requests sent since the last
        headers used up the quota they announced: slots reserved at the old pace must not
        spill past the end of the window."""
        if self._quota is None or self._window_reset is None:
            return False
        left = self._window_reset + _RESET_SLACK - self._wall()
        if left <= 0:
            self._quota = None  # a new window: its quota is known from the next answer
            return False
        if self._quota > 0:
            return False
        self._pause(left)
        return True

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free in-flight place and for this request's turn, then hold it."""
        async with self._in_flight:
            # One waiter at a time reserves its slot, just in time: a slot reserved long
            # ahead at an old pace would ignore what the next headers say.
            asked = self._clock()
            async with self._turn:
                await self._wait_turn()
            waited = self._clock() - asked
            if waited > 0.001:
                self.waits += 1
                self.waited_seconds += waited
            self.requests += 1
            self._active += 1
            if self._quota is not None:
                self._quota -= 1
            try:
                yield
            finally:
                self._active -= 1

    def observe(self, info: RateLimitInfo) -> None:
        """Adapt the pace to a successful answer's rate-limit headers."""
        self._backoff = _MIN_BACKOFF
        if self._stale(info.reset_at):  # sent in a window already over: it says nothing now
            return
        if info.policy_limit is not None and info.policy_window:
            self._policy_rate = info.policy_limit / info.policy_window
        announced = info.limit if info.limit is not None else info.policy_limit
        if announced is not None and announced != self._limit:
            # Another limit (or another bucket's): judge it anew.
            self._limit, self._ceiling, self._used = announced, 1.0, 0
        if info.remaining is not None and info.reset_at is not None:
            self._new_window(info.reset_at)
            left = info.reset_at - self._wall()
            # What the host really has left: its advertised remaining, less the part of
            # the advertised quota not believed (all of it remaining, if no limit is
            # known), less the requests in flight (sent, maybe not yet counted).
            limit = self._limit
            if limit is not None:
                self._used = max(self._used, limit - info.remaining)
                believed = info.remaining - (1 - self._trust) * limit
            else:
                believed = self._trust * info.remaining
            room = math.floor(believed) - self._active
            if room <= 0 and left > 0:
                self._room = self._quota = 0
                self._pause(left + _RESET_SLACK)
                return
            self._room = self._quota = room
            rate = max(room, 1) / max(left, 1.0)
            self._set_rate(rate, hold=left + _RESET_SLACK)
        elif info.policy_limit is not None and info.policy_window:
            self._set_rate(self._trust * info.policy_limit / info.policy_window)
        elif self.rate < self._base_rate:
            self._set_rate(self.rate * 1.05)  # additive recovery after a 429 without headers

    def _stale(self, reset_at: float | None) -> bool:
        """Whether headers with this reset come from a window before the current one (an
        answer that took long to arrive)."""
        last = self._last_reset
        return reset_at is not None and last is not None and reset_at < last - _SAME_WINDOW

    def _new_window(self, reset_at: float) -> None:
        """On a host's new rate-limit window, win back some trust if the last one passed
        without a 429 (one refusal must not slow a host for the rest of the job), but
        not past the share of its quota the host has been seen to accept."""
        if self._last_reset is not None and reset_at > self._last_reset + _SAME_WINDOW:
            if not self._limited_in_window:
                self._trust = min(self._ceiling, self._trust / 0.8)
            self._limited_in_window = False
            self._used = 0
        self._last_reset = self._window_reset = reset_at

    def rate_limited(
        self,
        retry_after: float | None,
        remaining: int | None = None,
        reset_at: float | None = None,
    ) -> None:
        """A 429: pause this host until the host says, or back off exponentially. When the
        host refused while claiming room (``remaining`` / ``reset_at``: the refusal's own
        headers, else its last answer's), it overstates its limit: trust it less."""
        self.rate_limited_count += 1
        if retry_after is not None and retry_after > 0:
            delay = min(retry_after + _RESET_SLACK, _MAX_BACKOFF)
        else:
            delay = self._backoff
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        self._pause(delay)
        if self._room is None and remaining is None:  # no headers at all: halve our pace
            self._base_rate = max(self._base_rate * 0.5, self.options.min_rate)
            self._set_rate(min(self.rate, self._base_rate))
            return
        if self._stale(reset_at):  # a refusal from a window already over
            return
        first_in_window = not self._limited_in_window
        self._limited_in_window = True
        if not first_in_window:  # the refusals of one window (requests in flight) count once
            return
        if remaining is not None and remaining > 1:  # its own headers claim room
            self._distrust(remaining)
        elif remaining is None and self._room is not None and self._room > 1:
            self._distrust(None)  # the last answer claimed room

    def _distrust(self, remaining: int | None) -> None:
        """Believe the host's headers less. ``remaining``: the refusal's own count of what
        is left, which measures what the host had accepted in this window — its count at
        the refusal, less the refused request (which a host may count); answers still in
        flight may have been accepted too. Then believe no more than that share of its
        advertised quota, now and after clean windows (a measure, so a later refusal at
        the same count costs nothing more). Unmeasured: 30 % less, for a while."""
        if remaining is not None and self._limit:
            self._used = max(self._used, self._limit - remaining - 1)
            accepted = min(self._used / self._limit, 1.0)
            self._ceiling = max(accepted, 0.05)
            self._trust = max(min(self._trust, accepted), 0.05)
        else:
            self._trust = max(self._trust * 0.7, 0.05)
        self._set_rate(self.rate * 0.7)

    def _pause(self, seconds: float) -> None:
        self.paused_seconds += self._pace.pause(seconds)

    def _set_rate(self, rate: float, hold: float | None = None) -> None:
        self._pace.set_rate(min(max(rate, self.options.min_rate), self.options.max_rate), hold)
