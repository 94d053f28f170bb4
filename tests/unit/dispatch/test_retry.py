"""Retrying a batch: exponential backoff, Retry-After, permanent errors at once."""

from __future__ import annotations

import pytest

from bsky_backfill.dispatch.config import WebhookIntegration
from bsky_backfill.dispatch.retry import RetryPolicy, send_with_retries
from bsky_backfill.dispatch.targets import DeliveryRefused
from bsky_backfill.dispatch.webhook import WebhookTarget
from bsky_backfill.errors import HostUnavailable, RateLimited
from tests.unit.dispatch.conftest import Receiver, status
from tests.unit.dispatch.test_webhook import DELIVERY


def test_the_delay_doubles_up_to_the_cap_and_follows_retry_after() -> None:
    policy = RetryPolicy(max_retries=9, backoff_seconds=0.5, max_backoff_seconds=3)
    busy = HostUnavailable("503")
    assert [policy.delay(n, busy) for n in range(5)] == [0.5, 1, 2, 3, 3]
    assert policy.delay(0, RateLimited("429", retry_after=2.5)) == 2.5
    assert policy.delay(0, RateLimited("429", retry_after=60)) == 3


async def send(receiver: Receiver, policy: RetryPolicy) -> tuple[int, list[float]]:
    spec = WebhookIntegration(name="hook", type="webhook", url=receiver.url)
    target = WebhookTarget(spec, allow_private=True)
    delays: list[float] = []
    try:
        retries = await send_with_retries(
            target, DELIVERY, policy, on_retry=lambda _n, _e, delay: delays.append(delay)
        )
    finally:
        await target.aclose()
    return retries, delays


async def test_retryable_answers_are_retried_until_acknowledged(receiver: Receiver) -> None:
    receiver.answers = [status(503), status(429, {"Retry-After": "0"}), status(502)]
    policy = RetryPolicy(max_retries=5, backoff_seconds=0.01)
    assert await send(receiver, policy) == (3, [0.01, 0.0, 0.04])
    assert len(receiver.bodies) == 4


async def test_the_last_error_is_raised_when_retries_run_out(receiver: Receiver) -> None:
    receiver.answers = [status(503)] * 3
    with pytest.raises(HostUnavailable):
        await send(receiver, RetryPolicy(max_retries=2, backoff_seconds=0.01))
    assert len(receiver.bodies) == 3


async def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    receiver.answers = [status(422)]
    with pytest.raises(DeliveryRefused):
        await send(receiver, RetryPolicy(max_retries=5, backoff_seconds=0.01))
    assert len(receiver.bodies) == 1
