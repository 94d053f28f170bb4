from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bsky_backfill.config.loader import load_config_text
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.observability.alerts import Alert, alert_for, send_alert
from tests.support.webhook import Webhook, webhook_receiver


def config(url: str, *, on: bool = True) -> BackfillConfig:
    text = (
        "backfill:\n  name: study\n"
        "  source: {type: inline, dids: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]}\n"
        '  time_range: {start_date: "2025-01-01"}\n'
        "  network: {allow_private_addresses: true}\n"
        f"  monitoring: {{alert_on_failure: {str(on).lower()}, alert_webhook_url: '{url}'}}\n"
    )
    return load_config_text(text, base_dir=Path("."), environ={})


async def send(settings: BackfillConfig, alert: Alert | None) -> bool:
    return await send_alert(settings, alert, backoff=0.01)


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Webhook, str]]:
    async with webhook_receiver(getattr(request, "param", [])) as hook:
        yield hook, hook.url


def test_a_job_that_raised_is_a_failure_and_a_clean_one_is_not() -> None:
    failed = alert_for("j", error=RuntimeError("disk full"))
    assert failed is not None
    assert failed.headline == "failed"
    assert "RuntimeError: disk full" in failed.detail
    assert alert_for("j", counts={"complete": 10, "takendown": 2}) is None


def test_failed_dids_are_announced_with_the_counts() -> None:
    alert = alert_for("j", counts={"complete": 10, "failed": 3})
    assert alert is not None
    assert alert.headline == "finished with 3 failed DIDs"
    assert alert.detail == "10 complete, 3 failed"


def test_the_message_is_slack_compatible() -> None:
    payload = alert_for("study", error=OSError("x"))
    assert payload is not None
    message = payload.payload()
    assert message["text"].startswith("bsky-backfill job study: failed")
    assert all(block["type"] == "section" for block in message["blocks"])  # type: ignore[index, union-attr]


async def test_one_alert_reaches_the_webhook(receiver: tuple[Webhook, str]) -> None:
    got, url = receiver
    assert await send(config(url), alert_for("study", error=OSError("gone")))
    assert len(got.messages) == 1
    assert "gone" in got.messages[0]["text"]


@pytest.mark.parametrize("receiver", [[503]], indirect=True)
async def test_a_refusal_is_tried_again(receiver: tuple[Webhook, str]) -> None:
    got, url = receiver
    assert await send(config(url), alert_for("study", error=OSError("gone")))
    assert len(got.messages) == 2  # refused, then delivered: one alert landed


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
async def test_a_rejected_alert_is_not_sent_twice(receiver: tuple[Webhook, str]) -> None:
    got, url = receiver
    assert not await send(config(url), alert_for("study", error=OSError("gone")))
    assert len(got.messages) == 1


async def test_nothing_is_sent_when_alerts_are_off_or_nothing_failed(
    receiver: tuple[Webhook, str],
) -> None:
    got, url = receiver
    assert not await send(config(url, on=False), alert_for("s", error=OSError("x")))
    assert not await send(config(url), alert_for("s", counts={"complete": 1}))
    assert got.messages == []


async def test_an_unreachable_webhook_does_not_raise() -> None:
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    assert not await send(config(url), alert_for("s", error=OSError("x")))
