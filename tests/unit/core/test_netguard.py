from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.core.netguard import PublicOnlyResolver, RefusedAddress, check_endpoint
from bsky_backfill.errors import HostUnavailable, XrpcError


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:2583",
        "http://localhost:8080",
        "http://api.localhost",
        "http://10.0.0.1",
        "http://172.16.5.4",
        "http://192.168.1.1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:80",
        "http://[fe80::1]",
        "http://[fd00::1]",
        "http://[::ffff:127.0.0.1]",
        "http://[::ffff:169.254.169.254]",
        "http://[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "http://[64:ff9b::a9fe:a9fe]",  # NAT64 of the cloud metadata address
        "http://[64:ff9b:1::808:808]",  # local-use NAT64 prefix
        "http://[2002:a00:1::]",  # 6to4 of 10.0.0.1
        "http://[::7f00:1]",  # IPv4-compatible 127.0.0.1
        "http://0.0.0.0",
        "http://224.0.0.1",
        "file:///etc/passwd",
        "gopher://example.com",
        "http://",
    ],
)
def test_private_and_odd_endpoints_are_refused(url: str) -> None:
    with pytest.raises(RefusedAddress):
        check_endpoint(url, allow_private=False, did="did:plc:x")


@pytest.mark.parametrize(
    "url",
    [
        "https://bsky.social",
        "https://morel.us-east.host.bsky.network",
        "http://8.8.8.8",
        "http://[64:ff9b::808:808]",  # NAT64 of a public address
        "http://[2606:4700::1111]",
    ],
)
def test_public_endpoints_pass(url: str) -> None:
    check_endpoint(url, allow_private=False)


def test_a_test_network_may_allow_loopback_but_never_other_schemes() -> None:
    check_endpoint("http://127.0.0.1:1234", allow_private=True)
    with pytest.raises(RefusedAddress):
        check_endpoint("file:///etc/passwd", allow_private=True)


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "addresses",
    [("127.0.0.1",), ("10.1.2.3",), ("169.254.169.254",), ("93.184.216.34", "::1")],
)
async def test_a_name_resolving_to_any_non_public_address_is_refused(
    addresses: tuple[str, ...],
) -> None:
    resolver = PublicOnlyResolver(FixedResolver(*addresses))
    with pytest.raises(OSError, match=r"pds\.example resolves to a private"):
        await resolver.resolve("pds.example", 443)


async def test_a_name_resolving_to_public_addresses_passes() -> None:
    resolver = PublicOnlyResolver(FixedResolver("93.184.216.34", "2606:2800:220:1::1"))
    found = await resolver.resolve("pds.example", 443)
    assert [r["host"] for r in found] == ["93.184.216.34", "2606:2800:220:1::1"]


async def test_the_guarded_client_cannot_reach_localhost_by_name() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"did": "did:plc:x"})

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.getLatestCommit", hello)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://localhost:{server.port}"
        connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver())
        try:
            async with XrpcClient.open(connector=connector) as client:
                with pytest.raises(HostUnavailable, match="resolves to a private"):
                    await client.get_json(url, "com.atproto.sync.getLatestCommit")
        finally:
            await connector.close()
        async with XrpcClient.open() as open_client:  # unguarded (test networks): reached
            answer = await open_client.get_json(url, "com.atproto.sync.getLatestCommit")
            assert answer.data == {"did": "did:plc:x"}


async def test_redirects_are_not_followed() -> None:
    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.getLatestCommit", away)
    async with TestServer(app, host="127.0.0.1") as server, XrpcClient.open() as client:
        with pytest.raises(XrpcError) as caught:
            await client.get_json(
                f"http://127.0.0.1:{server.port}", "com.atproto.sync.getLatestCommit"
            )
    assert caught.value.status == 302
