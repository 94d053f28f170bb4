"""Rate limits like the reference PDS: fixed windows per client IP, per host.

The reference PDS counts with rate-limiter-flexible's memory store: a key's window opens at
its first request and lasts ``window`` seconds; every request in it adds one point, refused
ones included; ``remaining = max(limit - points, 0)``. Where several limiters apply (the
global one and getRepo's own), the headers show the tightest: an exceeded bucket, else the
one with the fewest points remaining. ``RateLimit-Reset`` is absolute epoch seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bsky_backfill.fakenet.http import Reply, xrpc_error
from bsky_backfill.fakenet.spec import HostSpec

__all__ = ["GET_REPO", "Bucket", "BucketState", "HostLimiter"]

GET_REPO: Final = "com.atproto.sync.getRepo"
# Expired windows are dropped lazily; past this many keys a sweep runs, so a flood of
# distinct client addresses cannot grow memory without bound.
_SWEEP_AT: Final = 10_000


@dataclass(frozen=True, slots=True)
class BucketState:
    """One bucket's answer to one request: its limit and window, points left, when the
    window ends (epoch seconds) and whether this request went over the limit."""

    limit: int
    window_s: float
    remaining: int
    reset_at: float
    exceeded: bool


class Bucket:
    """Fixed-window counters by key (client IP) with one limit and window."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (ends_at, points)

    def consume(self, key: str) -> BucketState:
        """Count one request for ``key`` and say where the key stands."""
        now = self._clock()
        ends_at, points = self._windows.get(key, (0.0, 0))
        if now >= ends_at:
            if len(self._windows) >= _SWEEP_AT:
                self._sweep(now)
            ends_at, points = now + self.window_s, 0
        points += 1
        self._windows[key] = (ends_at, points)
        remaining = max(self.limit - points, 0)
        return BucketState(self.limit, self.window_s, remaining, ends_at, points > self.limit)

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if now < w[0]}


class HostLimiter:
    """The limiters of one PDS host, as its :class:`HostSpec` describes them.

    :meth:`check` counts one XRPC call and returns the rate-limit headers to send and, when
    a bucket is exceeded, the 429 answer to send instead of the real one.
    """

    def __init__(self, spec: HostSpec, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self._clock = clock
        self._global = Bucket(spec.global_limit, spec.global_window_s, clock)
        self._get_repo = (
            Bucket(spec.getrepo_limit, spec.getrepo_window_s, clock)
            if spec.getrepo_limit is not None
            else None
        )

    def check(self, client: str, nsid: str) -> tuple[dict[str, str], Reply | None]:
        """Count a call of ``nsid`` from ``client``: ``(headers, 429 reply or None)``."""
        states = [bucket.consume(client) for bucket in self._buckets(nsid)]
        tightest = next((s for s in states if s.exceeded), None) or min(
            states, key=lambda s: s.remaining
        )
        headers = self._headers(tightest) if self.spec.headers else {}
        if not tightest.exceeded:
            return headers, None
        if self.spec.retry_after:
            wait = max(1, math.ceil(tightest.reset_at - self._clock()))
            headers["Retry-After"] = str(wait)
        refusal = xrpc_error(429, "RateLimitExceeded", "Rate Limit Exceeded")
        return headers, Reply(refusal.status, refusal.body, headers=headers)

    def _buckets(self, nsid: str) -> list[Bucket]:
        if nsid != GET_REPO or self._get_repo is None:
            return [self._global]
        if self.spec.getrepo_in_global:
            return [self._get_repo, self._global]
        return [self._get_repo]

    def _headers(self, state: BucketState) -> dict[str, str]:
        """The headers for ``state``; a lying host scales the limit it advertises and the
        remaining count with it, as if its real limit were that large."""
        limit = max(1, round(state.limit * self.spec.advertise_factor))
        used = state.limit - state.remaining
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(limit - used, 0)),
            "RateLimit-Reset": str(math.floor(state.reset_at)),
            "RateLimit-Policy": f"{limit};w={max(1, round(state.window_s))}",
        }
