"""Per-key request rate limiting for the API, in memory (one server process).

Each key has a token bucket of ``burst`` requests refilled at ``rate`` per second, kept as
GCRA does: one number per key, the moment its bucket will be full again (``full_at``).
A request is allowed when taking one token leaves the bucket no more than ``burst``
tokens in debt of full; the bucket of an idle key refills, and once full it is forgotten,
since a full bucket and no bucket behave alike. Memory therefore holds only the keys seen
within about two refill periods (``burst / rate`` seconds, at least one second).

The answer carries the headers the project's hosts send (``PROTOCOL.md``; the reference
PDS, ``fakenet``), so a client that paces itself by a PDS (``atproto.ratelimit``) reads
ours the same way:
- ``RateLimit-Limit``: ``burst``; ``RateLimit-Remaining``: whole tokens left;
- ``RateLimit-Reset``: ABSOLUTE unix seconds (as the reference PDS), rounded up, when the
  bucket is full again;
- ``RateLimit-Policy: "<burst>;w=<seconds>"``: the sustained rate, the window rounded up
  (so never more than allowed);
- ``Retry-After`` (whole seconds, rounded up, at least 1) on a refusal.

:meth:`KeyRateLimiter.check` does not await: under asyncio no other task runs inside it,
so no lock is needed. It is not thread-safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bsky_backfill.errors import ConfigError

__all__ = ["KeyRateLimiter", "RateDecision"]

# Clock readings are floats: a bucket refilled by exactly one interval must count as one
# token, not 0.9999999999.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The limiter's answer to one request.

    ``limit``: the burst size; ``remaining``: whole requests allowed right now after this
    one; ``reset_seconds``: until the bucket is full again; ``reset_at``: the same moment
    in unix seconds; ``retry_after``: seconds until a request would be allowed (refused
    requests only, else None); ``window_seconds``: the policy window (``burst / rate``).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float
    retry_after: float | None
    reset_at: float
    window_seconds: float

    def headers(self) -> dict[str, str]:
        """The rate-limit response headers (see the module docstring)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_at - _EPSILON)),
            "RateLimit-Policy": f"{self.limit};w={max(1, math.ceil(self.window_seconds))}",
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after - _EPSILON)))
        return headers


class KeyRateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second.

    ``clock`` (monotonic seconds) measures refills; ``wall`` (unix seconds) only dates
    ``RateLimit-Reset``; both are for tests. Raises ``ConfigError`` unless ``rate > 0``
    and ``burst >= 1``.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"API rate limit must be a positive number, not {rate!r}")
        if burst < 1:
            raise ConfigError(f"API rate limit burst must be at least 1, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._wall = wall
        self._interval = 1.0 / rate  # seconds one token takes to come back
        self._capacity = burst * self._interval  # seconds an empty bucket takes to fill
        self._full_at: dict[str, float] = {}
        # Sweeping costs a pass over every bucket: at most once a second.
        self._sweep_every = max(self._capacity, 1.0)
        self._next_sweep = clock() + self._sweep_every

    def __len__(self) -> int:
        """Keys whose bucket is tracked (not yet found full and forgotten)."""
        return len(self._full_at)

    def check(self, key_id: str) -> RateDecision:
        """Take one token from ``key_id``'s bucket if it has one; say what happened."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        full_at = max(self._full_at.get(key_id, now), now)
        after = full_at + self._interval
        debt = after - now  # seconds until full if this request is allowed
        allowed = debt <= self._capacity + _EPSILON
        if allowed:
            self._full_at[key_id] = after
        else:
            debt = full_at - now
        remaining = max(0, math.floor((self._capacity - debt) / self._interval + _EPSILON))
        return RateDecision(
            allowed=allowed,
            limit=self.burst,
            remaining=remaining,
            reset_seconds=debt,
            retry_after=None if allowed else debt + self._interval - self._capacity,
            reset_at=self._wall() + debt,
            window_seconds=self._capacity,
        )

    def _sweep(self, now: float) -> None:
        """Forget full buckets. Runs once per refill period (at least a second), so a key
        idle for two periods is gone and the cost is one pass per period, not per request."""
        self._full_at = {key: at for key, at in self._full_at.items() if at > now}
        self._next_sweep = now + self._sweep_every
