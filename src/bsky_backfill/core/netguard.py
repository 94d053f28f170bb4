"""The SSRF guard for addresses learned from the network: a DID document names the PDS
to fetch from, and anyone can publish a DID document.

Unless ``network.allow_private_addresses`` is set (test networks on loopback), a PDS
endpoint must be http(s) on a public host: no loopback, private, link-local (cloud
metadata at 169.254.169.254), multicast, reserved or unspecified address, in any IPv4 or
IPv6 spelling, and no ``localhost``. Host names are checked by name here; checking what
a name resolves to is :class:`PublicOnlyResolver`'s job, in the HTTP client's connector.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from bsky_backfill.errors import PermanentError

__all__ = ["PublicOnlyResolver", "RefusedAddress", "check_endpoint", "is_public_ip"]

_LOCAL_NAMES: Final = ("localhost", "localhost.", "ip6-localhost", "ip6-loopback")


class RefusedAddress(PermanentError):
    """A PDS endpoint that points somewhere a backfill must not send requests."""


def is_public_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_endpoint(url: str, *, allow_private: bool, did: str | None = None) -> None:
    """Raise ``RefusedAddress`` unless ``url`` may be fetched (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedAddress(f"PDS endpoint {url!r} is not an http(s) URL", did=did, url=url)
    if allow_private:
        return
    host = parts.hostname.lower()
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        raise RefusedAddress(f"PDS endpoint {url!r} is a local name", did=did, url=url)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: judged by the resolver when it is looked up
    if not is_public_ip(address):
        raise RefusedAddress(
            f"PDS endpoint {url!r} is a private, loopback or link-local address;"
            " set network.allow_private_addresses only for a test network",
            did=did,
            url=url,
        )


class PublicOnlyResolver(AbstractResolver):
    """A resolver that refuses host names resolving to any non-public address.

    Checking a PDS endpoint by name cannot see what the name resolves to; this does, at
    every connection, redirects included. (IP literals are not resolved: aiohttp
    connects to them directly, so ``check_endpoint`` judges those, and the client does
    not follow redirects.)
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        refused = [r["host"] for r in results if not is_public_ip(ipaddress.ip_address(r["host"]))]
        if refused:
            # aiohttp reports ``strerror``: the reason reaches the DID's error.
            raise OSError(
                errno.EACCES,
                f"{host} resolves to a private, loopback or link-local address; refused"
                " (network.allow_private_addresses is for test networks only)",
            )
        return results

    async def close(self) -> None:
        await self._inner.close()
