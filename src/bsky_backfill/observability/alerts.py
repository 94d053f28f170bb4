"""Failure alerts: a Slack-compatible JSON message (``{"text": ..., "blocks": [...]}``,
which Slack, Mattermost, Rocket.Chat and most webhook relays accept) posted to
``monitoring.alert_webhook_url`` when a job fails or ends with failed DIDs, if
``monitoring.alert_on_failure`` is on. A cancelled job is not a failure.

One alert per job end: a post is retried only when it surely did not land (no
connection, or the receiver answered 429 / 5xx), so the receiver never gets two.
An alert that cannot be delivered is logged, never raised: it must not turn a finished
job into a failed one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog

from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.core.netguard import PublicOnlyResolver

__all__ = ["Alert", "alert_for", "send_alert"]

logger = structlog.get_logger(__name__)

_ATTEMPTS: Final = 3
_TIMEOUT: Final = aiohttp.ClientTimeout(total=15, sock_connect=5)


@dataclass(frozen=True, slots=True)
class Alert:
    """What went wrong with a job, as the message says it."""

    job_id: str
    headline: str
    detail: str

    def payload(self) -> dict[str, object]:
        """The Slack-compatible message."""
        text = f"bsky-backfill job {self.job_id}: {self.headline}"
        return {
            "text": f"{text}\n{self.detail}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": self.detail}},
            ],
        }


def alert_for(
    job_id: str, *, counts: dict[str, int] | None = None, error: BaseException | None = None
) -> Alert | None:
    """The alert a job's end calls for: it raised ``error`` (failed), or finished with
    ``counts`` holding failed DIDs; None when nothing went wrong."""
    if error is not None:
        return Alert(job_id, "failed", f"{type(error).__name__}: {error}")
    failed = (counts or {}).get("failed", 0)
    if failed:
        summary = ", ".join(f"{n} {state}" for state, n in sorted((counts or {}).items()))
        return Alert(job_id, f"finished with {failed} failed DIDs", summary)
    return None


async def send_alert(config: BackfillConfig, alert: Alert | None, *, backoff: float = 2.0) -> bool:
    """Post ``alert`` where ``config`` says, if it says so; True if one was delivered.
    Tries again after ``backoff`` seconds, then twice that."""
    url = config.monitoring.alert_webhook_url
    if alert is None or not config.monitoring.alert_on_failure or url is None:
        return False
    resolver = None if config.network.allow_private_addresses else PublicOnlyResolver()
    connector = aiohttp.TCPConnector(resolver=resolver) if resolver else aiohttp.TCPConnector()
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        for attempt in range(1, _ATTEMPTS + 1):
            outcome = await _post(session, str(url), alert)
            if outcome is None:
                logger.info("alert.sent", headline=alert.headline, attempt=attempt)
                return True
            if not outcome.retry or attempt == _ATTEMPTS:
                logger.warning("alert.undelivered", reason=outcome.reason, attempt=attempt)
                return False
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    return False


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: str
    retry: bool


async def _post(session: aiohttp.ClientSession, url: str, alert: Alert) -> _Refused | None:
    """One post: None when delivered, else why not and whether another try is safe."""
    try:
        async with session.post(url, json=alert.payload(), allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return None
            retry = response.status == 429 or response.status >= 500
            return _Refused(f"the webhook answered HTTP {response.status}", retry)
    except aiohttp.ClientConnectorError as exc:  # nothing was sent
        return _Refused(f"cannot connect: {exc}", True)
    except (aiohttp.ClientError, TimeoutError) as exc:  # it may have landed: never twice
        return _Refused(f"{type(exc).__name__}: {exc}", False)
