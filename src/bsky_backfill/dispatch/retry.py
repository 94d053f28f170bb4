"""Sending one batch with retries: exponential backoff for failures worth retrying.

The schedule is the integration's: ``backoff_seconds`` before the first retry, doubled
each time, at most ``max_backoff_seconds``; a ``RateLimited`` answer's ``retry_after``
replaces the step (within the same cap). Permanent errors are raised at once. A retry
may deliver a batch the receiver already has (the earlier attempt timed out after it
arrived): receivers dedupe by uri + cid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bsky_backfill.dispatch.config import Integration
from bsky_backfill.dispatch.targets import Delivery, Target
from bsky_backfill.errors import RetryableError

__all__ = ["RetryPolicy", "send_with_retries"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a batch is sent again (see the module docstring)."""

    max_retries: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    @classmethod
    def of(cls, spec: Integration) -> RetryPolicy:
        """The policy an integration's config asks for."""
        return cls(spec.max_retries, spec.backoff_seconds, spec.max_backoff_seconds)

    def delay(self, retry: int, error: RetryableError) -> float:
        """Seconds before retry number ``retry`` (0-based) after ``error``."""
        step = self.backoff_seconds * float(2**retry)
        if error.retry_after is not None:
            step = error.retry_after
        return min(max(step, 0.0), self.max_backoff_seconds)


async def send_with_retries(
    target: Target,
    delivery: Delivery,
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, RetryableError, float], None] | None = None,
) -> int:
    """Send ``delivery`` until acknowledged; returns the retries it took.

    ``on_retry(retry, error, delay)`` is called before each wait. Raises the last
    ``RetryableError`` once ``policy.max_retries`` retries failed, and any other error
    at once.
    """
    retry = 0
    while True:
        try:
            await target.send(delivery)
        except RetryableError as error:
            if retry >= policy.max_retries:
                raise
            delay = policy.delay(retry, error)
            if on_retry is not None:
                on_retry(retry, error, delay)
            await asyncio.sleep(delay)
            retry += 1
            continue
        return retry
