"""The one small interface every integration implements, the batch it is given, and the
address guard they share.

A target's ``send`` returning means the receiver acknowledged the whole batch. It raises
a ``RetryableError`` (``HostUnavailable``, ``RateLimited``) when sending again may work
and the receiver may or may not have the batch, and a ``PermanentError`` when it will
not (``DeliveryRefused``, ``RefusedAddress``). Retrying is the caller's
(:mod:`bsky_backfill.dispatch.retry`), so every target retries the same way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from bsky_backfill.core.netguard import PublicOnlyResolver, RefusedAddress, is_public_ip
from bsky_backfill.dispatch.selection import SelectedRecord
from bsky_backfill.errors import PermanentError

__all__ = ["Delivery", "DeliveryRefused", "Target", "check_receiver"]

_LOCAL_NAMES = ("localhost", "localhost.", "ip6-localhost", "ip6-loopback")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One batch for one integration: ``seq`` is its number in the bookkeeping (sent
    along, for the receiver's logs); every record carries its uri and cid."""

    dispatch: str
    integration: str
    seq: int
    records: tuple[SelectedRecord, ...]


class DeliveryRefused(PermanentError):
    """The receiver refused the batch for good (a 4xx other than 408/429, a redirect, a
    Redis error reply); sending it again would get the same answer."""


class Target(Protocol):
    """A downstream integration (see the module docstring)."""

    name: str

    async def send(self, delivery: Delivery) -> None:
        """Deliver ``delivery``; return once the receiver acknowledged all of it."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


async def check_receiver(url: str, *, allow_private: bool) -> None:
    """Raise ``RefusedAddress`` unless ``url``'s host is public (or ``allow_private``).

    Local names and IP literals are judged as written; other names are resolved now (for
    clients, such as Redis's, that take no resolver; the webhook's HTTP client also
    resolves through :class:`PublicOnlyResolver` at every connection).
    """
    if allow_private:
        return
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or host in _LOCAL_NAMES or host.endswith(".localhost"):
        raise RefusedAddress(f"receiver {host or url!r} is a local name", url=url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        resolver = PublicOnlyResolver()
        try:
            await resolver.resolve(host, parts.port or 0)
        except OSError as exc:
            raise RefusedAddress(f"receiver {host}: {exc.strerror or exc}", url=url) from None
        finally:
            await resolver.close()
        return
    if not is_public_ip(literal):
        raise RefusedAddress(
            f"receiver {host} is a private, loopback or link-local address; set "
            "network.allow_private_addresses only for a test network",
            url=url,
        )
