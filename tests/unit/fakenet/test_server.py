"""FakeNetwork as a whole: lifecycle, rate limits on the wire, the request log."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import HostSpec
from bsky_backfill.fakenet.threaded import run_in_thread
from tests.support.fakenet import fetch, pick, small_spec

LIST_REPOS = "/xrpc/com.atproto.sync.listRepos"
GET_REPO = "/xrpc/com.atproto.sync.getRepo"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_every_xrpc_answer_carries_headers_until_the_limit_then_429(
    session: aiohttp.ClientSession,
) -> None:
    host = HostSpec(global_limit=5, global_window_s=60, getrepo_limit=3, getrepo_window_s=30)
    async with FakeNetwork(small_spec(hosts=host)) as net:
        base = net.host_urls[0]
        started = time.time()
        answers = [await fetch(session, base + LIST_REPOS, limit=1) for _ in range(6)]
        assert [a.status for a in answers] == [200] * 5 + [429]
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
        for answer in answers:
            assert answer.headers["RateLimit-Policy"] == "5;w=60"
            reset = int(answer.headers["RateLimit-Reset"])
            assert started - 1 <= reset - 60 <= time.time()  # absolute: window start + 60 s
        assert answers[-1].error == "RateLimitExceeded"
        assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
        # getRepo has its own bucket: still open while the global one is spent.
        account = pick(net.world)
        repo = await fetch(session, net.host_urls[account.host] + GET_REPO, did=account.did)
        assert (repo.status, repo.headers["RateLimit-Policy"]) == (200, "3;w=30")
        # Another client address has buckets of its own.
        local = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=local) as other:
            assert (await fetch(other, base + LIST_REPOS)).status == 200
        assert {e.client for e in net.log.entries(host=0)} == {"127.0.0.1", "127.0.0.2"}


async def test_hosts_follow_their_own_specs(session: aiohttp.ClientSession) -> None:
    hosts = (
        HostSpec(global_limit=2, headers=False, retry_after=False),
        HostSpec(global_limit=2, advertise_factor=3.0),
        HostSpec(global_limit=2),
    )
    async with FakeNetwork(small_spec(hosts=hosts)) as net:
        quiet = [await fetch(session, net.host_urls[0] + LIST_REPOS) for _ in range(3)]
        assert [a.status for a in quiet] == [200, 200, 429]
        assert not any(k.startswith(("RateLimit", "Retry")) for a in quiet for k in a.headers)
        lying = [await fetch(session, net.host_urls[1] + LIST_REPOS) for _ in range(3)]
        assert [a.status for a in lying] == [200, 200, 429]
        assert lying[0].headers["RateLimit-Limit"] == "6"
        assert lying[2].headers["RateLimit-Remaining"] == "4"


async def test_an_injected_clock_drives_the_windows(session: aiohttp.ClientSession) -> None:
    clock = Clock()
    async with FakeNetwork(
        small_spec(hosts=HostSpec(global_limit=1, global_window_s=300)), clock=clock
    ) as net:
        url = net.host_urls[0] + LIST_REPOS
        assert [(await fetch(session, url)).status for _ in range(2)] == [200, 429]
        clock.now += 300
        assert (await fetch(session, url)).status == 200
        assert net.log.entries()[-1].wall == clock.now


async def test_the_log_records_every_request_and_can_be_bounded(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeNetwork(dataclasses.replace(small_spec(), log_limit=3)) as net:
        account = pick(net.world)
        base = net.host_urls[account.host]
        await fetch(session, f"{net.plc_url}/{account.did}")
        await fetch(session, base + GET_REPO, did=account.did)
        await fetch(session, base + "/.well-known/did.json")
        await fetch(session, base + GET_REPO, did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
        entries = list(net.log)
        assert [(e.host, e.endpoint, e.status) for e in entries] == [
            (account.host, "com.atproto.sync.getRepo", 200),
            (account.host, "/.well-known/did.json", 200),
            (account.host, "com.atproto.sync.getRepo", 400),
        ]
        assert net.log.dropped == 1
        assert entries[0].sent == len(net.world.export(account).car)
        assert entries[0].monotonic <= entries[2].monotonic


async def test_lifecycle_and_host_lookup() -> None:
    network = FakeNetwork(small_spec())
    with pytest.raises(RuntimeError, match="not running"):
        network.world  # noqa: B018
    async with network as net:
        assert len(net.host_urls) == 3
        assert net.host_of(net.host_urls[2] + "/") == 2
        with pytest.raises(KeyError):
            net.host_of("http://127.0.0.1:1")
        with pytest.raises(RuntimeError, match="already running"):
            await net.start()
    await network.close()  # idempotent


def test_a_network_in_a_thread_serves_synchronous_callers() -> None:
    with run_in_thread(small_spec()) as net:
        did, host = net.call(lambda n: (pick(n.world).did, pick(n.world).host))
        url = f"{net.host_urls[host]}/xrpc/com.atproto.sync.getLatestCommit?did={did}"
        with urllib.request.urlopen(url) as response:
            latest = json.load(response)
        rev = net.call(lambda n: n.put_record(did, "app.bsky.feed.post", "3m5aaaaaaaaa2", {"a": 1}))
        assert rev > latest["rev"]
        assert net.call(lambda n: len(n.log)) == 1
        with pytest.raises(KeyError):
            net.call(lambda n: n.host_of("http://nowhere"))
