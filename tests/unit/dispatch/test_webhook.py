"""The webhook target against a real HTTP receiver on loopback: what each answer means."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bsky_backfill.core.netguard import RefusedAddress
from bsky_backfill.dispatch.config import WebhookIntegration
from bsky_backfill.dispatch.targets import Delivery, DeliveryRefused, check_receiver
from bsky_backfill.dispatch.webhook import WebhookTarget
from bsky_backfill.errors import HostUnavailable, RateLimited
from tests.unit.dispatch.conftest import Receiver, slow, status
from tests.unit.dispatch.test_batching import selected

DELIVERY = Delivery("d", "hook", 7, (selected(1), selected(2)))


@pytest.fixture
async def target(receiver: Receiver) -> AsyncIterator[WebhookTarget]:
    spec = WebhookIntegration(
        name="hook",
        type="webhook",
        url=receiver.url,
        headers={"Authorization": "Bearer t"},
        timeout_seconds=0.3,
    )
    hook = WebhookTarget(spec, allow_private=True)
    yield hook
    await hook.aclose()


async def test_a_2xx_acknowledges_the_batch(receiver: Receiver, target: WebhookTarget) -> None:
    receiver.answers = [status(204)]
    await target.send(DELIVERY)
    (body,) = receiver.bodies
    assert (body["dispatch"], body["integration"], body["batch"]) == ("d", "hook", 7)
    assert [(i["uri"], i["cid"]) for i in body["items"]] == [r.key for r in DELIVERY.records]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (status(503), HostUnavailable),
        (status(408), HostUnavailable),
        (status(400, body="bad item"), DeliveryRefused),
        (status(302, {"Location": "http://169.254.169.254/"}), DeliveryRefused),
    ],
)
async def test_other_answers_raise_by_kind(
    receiver: Receiver, target: WebhookTarget, answer: object, error: type[Exception]
) -> None:
    receiver.answers = [answer]  # type: ignore[list-item]
    with pytest.raises(error):
        await target.send(DELIVERY)
    assert len(receiver.bodies) == 1  # never followed the redirect


async def test_a_429_carries_retry_after(receiver: Receiver, target: WebhookTarget) -> None:
    receiver.answers = [status(429, {"Retry-After": "2"})]
    with pytest.raises(RateLimited) as caught:
        await target.send(DELIVERY)
    assert caught.value.retry_after == pytest.approx(2, abs=0.5)


async def test_a_timeout_is_retryable(receiver: Receiver, target: WebhookTarget) -> None:
    receiver.answers = [slow(1.0)]
    with pytest.raises(HostUnavailable):
        await target.send(DELIVERY)


async def test_a_closed_port_is_retryable(receiver: Receiver) -> None:
    spec = WebhookIntegration(name="h", type="webhook", url="http://127.0.0.1:9/x")
    hook = WebhookTarget(spec, allow_private=True)
    try:
        with pytest.raises(HostUnavailable):
            await hook.send(DELIVERY)
    finally:
        await hook.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://169.254.169.254/latest",
        "redis://10.0.0.1:6379/0",
        "http://[::1]/x",
    ],
)
async def test_private_receivers_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(RefusedAddress):
        await check_receiver(url, allow_private=False)
    await check_receiver(url, allow_private=True)


async def test_a_name_resolving_to_loopback_is_refused_at_connect() -> None:
    # past the config check (as if a public name turned private): the resolver refuses it
    spec = WebhookIntegration(name="h", type="webhook", url="http://localhost:9/x")
    hook = WebhookTarget(spec, allow_private=False)
    try:
        with pytest.raises(RefusedAddress, match="private, loopback"):
            await hook.send(DELIVERY)
    finally:
        await hook.aclose()
