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


# IPv6 ranges that carry an IPv4 address in their last 32 bits and that ``is_global``
# judges by the IPv6 prefix alone: NAT64 (RFC 6052) and the deprecated IPv4-compatible
# form. 64:ff9b:1::/48 (RFC 8215) is for local use, so never public.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address. An IPv6 address carrying an IPv4
    one (mapped, NAT64, 6to4, IPv4-compatible) is public only if that IPv4 address is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _LOCAL_NAT64:
            return False
        elif address in _NAT64 or address in _IPV4_COMPATIBLE:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
            return _is_global(address) and _is_global(embedded)
        elif address.sixtofour is not None:
            return _is_global(address) and _is_global(address.sixtofour)
    return _is_global(address)


def _is_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
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
