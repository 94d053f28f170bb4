"""DID documents and the PLC directory / did:web answers of the simulated network."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bsky_backfill.atproto.identity import parse_did_document
from bsky_backfill.fakenet.plc import did_document, uses_legacy_key
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.world import World
from tests.support.fakenet import fetch, pick, small_spec


@pytest.fixture
async def net() -> AsyncIterator[FakeNetwork]:
    async with FakeNetwork(small_spec()) as network:
        yield network


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_both_key_forms_parse_back_to_the_account_key(legacy: bool, curve: str) -> None:
    world = World(PopulationSpec(seed=1, accounts=80, hosts=1))
    account = next(a for a in world if a.seed.curve == curve)
    public = account.seed.keypair.public_key
    document = did_document(account, public, "http://127.0.0.1:1234", legacy=legacy)
    identity = parse_did_document(document, account.did)
    assert identity.pds == "http://127.0.0.1:1234"
    assert identity.handle == account.seed.handle
    assert identity.signing_key.kind == ("legacy-" + curve if legacy else "multikey")
    assert identity.signing_key.public_key() == public


def test_the_legacy_share_is_deterministic_and_about_right() -> None:
    world = World(PopulationSpec(seed=1, accounts=2000, hosts=1))
    chosen = [uses_legacy_key(a, 0.25) for a in world]
    assert 400 < sum(chosen) < 600
    assert chosen == [uses_legacy_key(a, 0.25) for a in world]
    assert not any(uses_legacy_key(a, 0.0) for a in world)


async def test_the_directory_answers_404_unknown_and_410_tombstoned(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world)
    found = await fetch(session, f"{net.plc_url}/{account.did}")
    assert (found.status, found.json()["id"]) == (200, account.did)
    unknown = await fetch(session, f"{net.plc_url}/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert unknown.status == 404
    web = pick(net.world, web=True, min_records=0)
    assert (await fetch(session, f"{net.plc_url}/{web.did}")).status == 404
    net.set_status(account.did, "tombstoned")
    assert (await fetch(session, f"{net.plc_url}/{account.did}")).status == 410


async def test_each_host_serves_its_did_web_document(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    for host, base in enumerate(net.host_urls):
        port = base.rsplit(":", 1)[1]
        account = net.world.get(f"did:web:127.0.0.1%3A{port}")
        assert account is not None
        answer = await fetch(session, base + "/.well-known/did.json")
        if account.status == "tombstoned":
            assert answer.status == 404
            continue
        identity = parse_did_document(answer.json(), account.did)
        assert net.host_of(identity.pds) == account.host
        assert account.seed.index == host


async def test_a_host_without_a_did_web_account_answers_404(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeNetwork(small_spec(web_share=0.0)) as net:
        answer = await fetch(session, net.host_urls[0] + "/.well-known/did.json")
        assert answer.status == 404
