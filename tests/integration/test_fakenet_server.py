"""Our own client, resolver and reader against the simulated network, end to end; the
ground truth against a listRecords crawl; determinism; the CLI; a scale smoke test."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from bsky_backfill.atproto.identity import IdentityOptions, IdentityResolver
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.errors import RepoUnavailable
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import HostSpec, NetworkSpec
from bsky_backfill.fakenet.truth import expected_repos
from bsky_backfill.fakenet.world import Account
from tests.support.fakenet import small_spec

GET_REPO = "com.atproto.sync.getRepo"


def sample(net: FakeNetwork, count: int, *, max_records: int = 300) -> list[Account]:
    """Active accounts of modest size, did:web ones first, both curves."""
    small = [a for a in net.world if a.status == "active" and a.seed.record_count <= max_records]
    return sorted(small, key=lambda a: not a.did.startswith("did:web:"))[:count]


async def test_identities_resolve_to_their_host_and_keys_verify_the_served_cars() -> None:
    spec = NetworkSpec(small_spec().population, legacy_key_share=0.5)
    async with FakeNetwork(spec) as net, XrpcClient.open() as client:
        options = IdentityOptions(plc_url=net.plc_url, web_scheme="http")
        resolver = IdentityResolver(client, options)
        kinds = set()
        for account in sample(net, 40):
            identity = await resolver.resolve(account.did)
            assert net.host_of(identity.pds) == account.host
            kinds.add((account.did[:7], identity.signing_key.kind))
            key = identity.signing_key.public_key().did_key
            with await client.get_body(identity.pds, GET_REPO, {"did": account.did}) as body:
                assert body.data is not None
                with read_repo(body.data, signing_key=key, did=account.did) as repo:
                    assert repo.rev == account.rev
                    assert sum(1 for _ in repo.records) == account.seed.record_count
        assert {kind for _, kind in kinds} >= {"multikey", "legacy-k256", "legacy-p256"}
        assert "did:web" in {method for method, _ in kinds}


async def crawl(client: XrpcClient, base: str, did: str) -> dict[tuple[str, str], str]:
    """Every record of a repo through describeRepo + listRecords: (collection, rkey) -> CID."""
    described = await client.get_json(base, "com.atproto.repo.describeRepo", {"repo": did})
    found: dict[tuple[str, str], str] = {}
    for collection in described.data["collections"]:  # type: ignore[union-attr]
        params = {"repo": did, "collection": collection, "limit": 100}
        while True:
            page = (await client.get_json(base, "com.atproto.repo.listRecords", params)).data
            for record in page["records"]:  # type: ignore[union-attr]
                found[(collection, record["uri"].rsplit("/", 1)[1])] = record["cid"]
            if "cursor" not in page:
                break
            params = {**params, "cursor": page["cursor"]}  # type: ignore[dict-item]
    return found


async def outcome(client: XrpcClient, net: FakeNetwork, account: Account) -> str:
    try:
        await client.get_json(
            net.host_urls[account.host], "com.atproto.sync.getLatestCommit", {"did": account.did}
        )
    except RepoUnavailable as error:
        return error.status
    return "complete"


async def test_the_ground_truth_equals_a_list_records_crawl() -> None:
    async with FakeNetwork(small_spec(accounts=300)) as net, XrpcClient.open() as client:
        accounts = sample(net, 25)
        changed = accounts[:5]
        for n, account in enumerate(changed):
            victim = next(iter(account.current_records()))
            net.delete_record(account.did, *victim.split("/"))
            net.put_record(account.did, "app.bsky.feed.post", f"3m5aaaaaaa{n}22", {"text": "new"})
        inactive = [a for a in net.world if a.status != "active"][:8]
        dids = [a.did for a in accounts + inactive]
        truth = expected_repos(net.world, dids, fetched_at=datetime.now(UTC))
        for account in accounts:
            crawled = await crawl(client, net.host_urls[account.host], account.did)
            assert crawled == truth[account.did].records, account.did
        for account in accounts + inactive:
            assert await outcome(client, net, account) == truth[account.did].status


async def test_the_same_seed_gives_the_same_dids_and_car_bytes() -> None:
    async def snapshot(seed: int) -> tuple[list[str], list[bytes]]:
        async with FakeNetwork(small_spec(seed=seed)) as net, XrpcClient.open() as client:
            plc = [a for a in net.world if a.did.startswith("did:plc:")]
            cars = []
            for account in [a for a in plc if a.status == "active"][:10]:
                base = net.host_urls[account.host]
                with await client.get_body(base, GET_REPO, {"did": account.did}) as body:
                    assert body.data is not None
                    cars.append(body.data)
            return [a.did for a in plc], cars

    first, again, other = await snapshot(11), await snapshot(11), await snapshot(12)
    assert first == again
    assert not set(first[0]) & set(other[0])


def test_the_cli_announces_the_network_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-c", "from bsky_backfill.cli import main; main()"]
    args = ["fakenet", "--hosts", "3", "--accounts", "50", "--rate-limit-scale", "0.01"]
    with subprocess.Popen([*command, *args], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            urls = json.loads(proc.stdout.readline())
            assert len(urls["hosts"]) == 3
            listing = f"{urls['hosts'][0]}/xrpc/com.atproto.sync.listRepos"
            with urllib.request.urlopen(listing) as response:
                assert response.headers["RateLimit-Limit"] == "30"
                assert "repos" in json.load(response)
            with urllib.request.urlopen(urls["plc"] + "/_fakenet/log") as response:
                assert len(json.load(response)["entries"]) == 1
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == ""


@pytest.mark.timeout(60)
async def test_scale_100_hosts_and_100k_accounts(capsys: pytest.CaptureFixture[str]) -> None:
    unlimited = HostSpec(global_limit=10**9, getrepo_limit=10**9)
    spec = NetworkSpec(PopulationSpec(seed=1, accounts=100_000, hosts=100), hosts=unlimited)
    started = time.perf_counter()
    async with FakeNetwork(spec) as net, XrpcClient.open() as client:
        startup = time.perf_counter() - started
        assert len(net.world) == 100_000
        assert len(set(net.host_urls)) == 100
        small = [a for a in net.world if a.status == "active" and a.seed.record_count <= 10]
        targets = small[:1500]
        gate = asyncio.Semaphore(32)

        async def get(account: Account) -> None:
            async with gate:
                base = net.host_urls[account.host]
                with await client.get_body(base, GET_REPO, {"did": account.did}):
                    pass

        rates = []
        for _ in ("cold", "warm"):
            began = time.perf_counter()
            await asyncio.gather(*(get(a) for a in targets))
            rates.append(len(targets) / (time.perf_counter() - began))
        assert len(net.log.entries(status=200)) == 2 * len(targets)
    with capsys.disabled():
        print(
            f"\nfakenet scale: startup {startup:.1f} s (100 hosts, 100k accounts); small getRepo"
            f" in-process, 32 concurrent: cold {rates[0]:.0f}/s, warm {rates[1]:.0f}/s"
        )
    assert startup < 20
