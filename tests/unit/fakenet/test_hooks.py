"""A custom fault hook sees every request and decides what is sent."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.errors import HostUnavailable
from bsky_backfill.fakenet.http import Abort, Reply, RequestInfo, xrpc_error
from bsky_backfill.fakenet.server import FakeNetwork
from tests.support.fakenet import pick, small_spec

GET_REPO = "com.atproto.sync.getRepo"


class Scripted:
    """Fails getRepo by DID: 503, a reset, or a body cut after its first chunk."""

    def __init__(self) -> None:
        self.seen: list[tuple[int | None, str | None]] = []
        self.plan: dict[str, str] = {}

    async def __call__(self, info: RequestInfo, reply: Reply) -> Reply:
        self.seen.append((info.host, info.nsid))
        fault = self.plan.get(info.did or "")
        if fault == "503":
            return xrpc_error(503, "ServiceUnavailable", "try later")
        if fault == "reset":
            raise Abort
        if fault == "cut":
            assert isinstance(reply.body, bytes)
            return dataclasses.replace(reply, body=_cut(reply.body))
        return reply


async def _cut(body: bytes) -> AsyncIterator[bytes]:
    yield body[:100]
    await asyncio.sleep(0)
    raise Abort


@pytest.mark.parametrize("fault", ["503", "reset", "cut"])
async def test_a_custom_hook_is_invoked_and_its_fault_reaches_the_client(fault: str) -> None:
    hook = Scripted()
    async with FakeNetwork(small_spec(), faults=hook) as net, XrpcClient.open() as client:
        account = pick(net.world, min_records=100)
        hook.plan[account.did] = fault
        base = net.host_urls[account.host]
        with pytest.raises(HostUnavailable):
            await client.get_body(base, GET_REPO, {"did": account.did})
        other = pick(net.world, skip=1)
        body = await client.get_body(net.host_urls[other.host], GET_REPO, {"did": other.did})
        assert body.size == len(net.world.export(other).car)
        # aiohttp's client repeats a GET once when the server drops it unanswered.
        tries = 2 if fault == "reset" else 1
        assert hook.seen == [(account.host, GET_REPO)] * tries + [(other.host, GET_REPO)]
        failed = net.log.entries(did=account.did)[0]
        assert failed.status == {"503": 503, "reset": 0, "cut": 200}[fault]
        assert failed.sent == {"503": failed.sent, "reset": 0, "cut": 100}[fault]


async def test_plc_requests_pass_through_the_hook_too() -> None:
    hook = Scripted()
    async with FakeNetwork(small_spec(), faults=hook) as net, aiohttp.ClientSession() as session:
        async with session.get(f"{net.plc_url}/{pick(net.world).did}") as response:
            assert response.status == 200
        assert hook.seen == [(None, None)]
