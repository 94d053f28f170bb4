"""The fault injector, end to end on loopback: each fault mode is observable by a client."""

from __future__ import annotations

import time

import pytest

from bsky_backfill.atproto.identity import IdentityOptions, IdentityResolver
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.atproto.xrpc import XrpcClient, XrpcOptions
from bsky_backfill.errors import BadSignature, CorruptBlock, HostUnavailable, TruncatedRepo
from bsky_backfill.fakenet.faults import FaultSpec
from bsky_backfill.fakenet.injector import FaultInjector, HostConditions
from bsky_backfill.fakenet.server import FakeNetwork
from tests.support.fakenet import pick, small_spec

GET_REPO = "com.atproto.sync.getRepo"


async def get_repo(net: FakeNetwork, client: XrpcClient, did: str) -> bytes:
    account = net.world.get(did)
    assert account is not None
    with await client.get_body(net.host_urls[account.host], GET_REPO, {"did": did}) as body:
        assert body.data is not None
        return body.data


def read(net: FakeNetwork, car: bytes, did: str) -> int:
    account = net.world.get(did)
    assert account is not None
    with read_repo(car, signing_key=account.seed.keypair.did_key, did=did) as repo:
        return sum(1 for _ in repo.records)


@pytest.mark.parametrize("fault", ["error_5xx", "reset"])
async def test_transport_faults_reach_the_client_as_host_unavailable(fault: str) -> None:
    injector = FaultInjector(FaultSpec(rates={fault: 1.0}))
    async with FakeNetwork(small_spec(), faults=injector) as net, XrpcClient.open() as client:
        with pytest.raises(HostUnavailable):
            await get_repo(net, client, pick(net.world).did)
    assert injector.injected[fault] >= 1


async def test_a_stall_makes_the_client_time_out() -> None:
    injector = FaultInjector(FaultSpec(rates={"stall": 1.0}, stall_seconds=5))
    options = XrpcOptions(read_timeout=0.3, total_timeout=2)
    async with (
        FakeNetwork(small_spec(), faults=injector) as net,
        XrpcClient.open(options) as client,
    ):
        started = time.monotonic()
        with pytest.raises(HostUnavailable):
            await get_repo(net, client, pick(net.world).did)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [("truncate", TruncatedRepo), ("corrupt", CorruptBlock), ("bad_signature", BadSignature)],
)
async def test_car_faults_are_caught_by_the_reader(fault: str, error: type[Exception]) -> None:
    injector = FaultInjector(FaultSpec(rates={fault: 1.0}))
    async with FakeNetwork(small_spec(), faults=injector) as net, XrpcClient.open() as client:
        did = pick(net.world, min_records=20).did
        car = await get_repo(net, client, did)
        with pytest.raises(error):
            read(net, car, did)


async def test_account_faults_persist_and_spare_other_accounts() -> None:
    async with FakeNetwork(small_spec()) as net, XrpcClient.open() as client:
        bad, good = pick(net.world, min_records=20), pick(net.world, min_records=20, skip=1)
        net.faults = FaultInjector(account_faults={bad.did: "bad_signature"})
        for _ in range(2):
            with pytest.raises(BadSignature):
                read(net, await get_repo(net, client, bad.did), bad.did)
        assert read(net, await get_repo(net, client, good.did), good.did) == good.seed.record_count
        assert net.faults.failing_dids() == {bad.did}


async def test_a_scheduled_fault_hits_exactly_that_request() -> None:
    async with FakeNetwork(small_spec()) as net, XrpcClient.open() as client:
        account = pick(net.world)
        net.faults = FaultInjector(FaultSpec(schedule={account.host: {2: "error_5xx"}}))
        await get_repo(net, client, account.did)
        with pytest.raises(HostUnavailable):
            await get_repo(net, client, account.did)
        await get_repo(net, client, account.did)


async def test_an_endpoint_override_rewrites_the_did_document_only() -> None:
    async with FakeNetwork(small_spec()) as net, XrpcClient.open() as client:
        account = pick(net.world)
        net.faults = FaultInjector(endpoints={account.did: "http://169.254.169.254"})
        resolver = IdentityResolver(client, IdentityOptions(plc_url=net.plc_url))
        identity = await resolver.resolve(account.did)  # resolving only: nothing is fetched
        assert identity.pds == "http://169.254.169.254"
        other = await resolver.resolve(pick(net.world, skip=1).did)
        assert other.pds.startswith("http://127.0.0.1:")
        assert net.faults.failing_dids() == {account.did}


async def test_latency_and_bandwidth_slow_a_host_down() -> None:
    slow = {h: HostConditions(latency_s=0.2, bandwidth_bytes_per_s=200_000) for h in range(3)}
    async with (
        FakeNetwork(small_spec(), faults=FaultInjector(conditions=slow)) as net,
        XrpcClient.open() as client,
    ):
        account = pick(net.world, min_records=200, max_records=5000)
        size = len(net.world.export(account).car)
        started = time.monotonic()
        car = await get_repo(net, client, account.did)
        elapsed = time.monotonic() - started
        assert len(car) == size
        assert elapsed >= 0.2 + size / 200_000 * 0.9
