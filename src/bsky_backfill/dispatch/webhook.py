"""The webhook target: POST each batch as one JSON document.

Body::

    {"dispatch": NAME, "integration": NAME, "batch": SEQ,
     "items": [{"uri", "cid", "did", "collection", "rkey", "created_at", "record"}, ...]}

Answers: any 2xx acknowledges the batch; 429 is ``RateLimited`` (``Retry-After``
honoured); 408 and 5xx, refused or reset connections and timeouts are
``HostUnavailable`` (retried: the receiver may have the batch already, so it dedupes by
uri + cid); any other answer, redirects included (never followed: a redirect could point
anywhere), is ``DeliveryRefused``. Without ``allow_private``, every connection resolves
through :class:`~bsky_backfill.core.netguard.PublicOnlyResolver`, so a name that turns
private (DNS rebinding) is refused at connect time.
"""

from __future__ import annotations

import errno
import time
from typing import Any, Final

import aiohttp

from bsky_backfill.atproto.ratelimit import RateLimitInfo
from bsky_backfill.atproto.xrpc import map_transport_error
from bsky_backfill.core.netguard import PublicOnlyResolver, RefusedAddress
from bsky_backfill.dispatch.config import WebhookIntegration
from bsky_backfill.dispatch.targets import Delivery, DeliveryRefused
from bsky_backfill.errors import BackfillError, HostUnavailable, RateLimited

__all__ = ["WebhookTarget", "payload"]

_SHOWN_BODY: Final = 200  # characters of a refusal's body kept in the error


def payload(delivery: Delivery) -> dict[str, Any]:
    """The JSON document POSTed for ``delivery`` (see the module docstring)."""
    return {
        "dispatch": delivery.dispatch,
        "integration": delivery.integration,
        "batch": delivery.seq,
        "items": [record.item() for record in delivery.records],
    }


class WebhookTarget:
    """POSTs batches to one URL; see the module docstring. Closed with ``aclose``."""

    def __init__(self, spec: WebhookIntegration, *, allow_private: bool) -> None:
        self.name = spec.name
        self._spec = spec
        resolver = None if allow_private else PublicOnlyResolver()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver),
            timeout=aiohttp.ClientTimeout(total=spec.timeout_seconds),
            headers=spec.headers,
        )

    async def send(self, delivery: Delivery) -> None:
        """POST ``delivery``; return on a 2xx. Raises as the module docstring says."""
        url = self._spec.url
        try:
            async with self._session.post(
                url, json=payload(delivery), allow_redirects=False
            ) as response:
                body = await response.read()
                status, headers = response.status, response.headers
        except aiohttp.ClientConnectorError as exc:
            if exc.os_error.errno == errno.EACCES:  # PublicOnlyResolver's refusal
                raise RefusedAddress(str(exc.os_error.strerror), url=url) from None
            raise map_transport_error(exc, url=url) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise map_transport_error(exc, url=url) from None
        if 200 <= status < 300:
            return
        raise _answer_error(status, body, headers, url)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self._session.close()


def _answer_error(status: int, body: bytes, headers: Any, url: str) -> BackfillError:
    message = f"HTTP {status} from the webhook"
    if status == 429:
        limits = RateLimitInfo.from_headers(headers, now=time.time())
        return RateLimited(message, retry_after=limits.retry_delay(time.time()), url=url)
    if status == 408 or status >= 500:
        return HostUnavailable(message, url=url)
    shown = " ".join(body.decode("utf-8", "replace").split())[:_SHOWN_BODY]
    return DeliveryRefused(f"{message}: {shown}" if shown else message, url=url)
