"""The control API over HTTP: change the world while it is served, read the request log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import cbrrr
import pytest

from bsky_backfill.fakenet.control import ControlError, from_atproto_json
from bsky_backfill.fakenet.server import FakeNetwork
from tests.support.fakenet import fetch, pick, small_spec

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture
async def net() -> AsyncIterator[FakeNetwork]:
    async with FakeNetwork(small_spec()) as network:
        yield network


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def test_atproto_json_links_and_bytes_become_cbor_values() -> None:
    value = from_atproto_json({"a": [{"$link": CID}], "b": {"$bytes": "aGk"}, "c": {"x": 1}})
    assert value["a"][0] == cbrrr.CID.decode(CID)
    assert value["b"] == b"hi"
    assert value["c"] == {"x": 1}
    with pytest.raises(ControlError, match=r"\$link"):
        from_atproto_json({"$link": "nonsense"})
    with pytest.raises(ControlError, match=r"\$bytes"):
        from_atproto_json({"$bytes": "!!"})


async def test_records_put_and_deleted_over_http_show_in_list_records(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world)
    control = net.plc_url + "/_fakenet/record"
    value = {"$type": "app.bsky.feed.post", "text": "hi", "embed": {"ref": {"$link": CID}}}
    body = {"did": account.did, "collection": "app.bsky.feed.post", "rkey": "3m5aaaaaaaaa2"}
    async with session.put(control, json={**body, "value": value}) as response:
        assert response.status == 200
        rev = (await response.json())["rev"]
    assert rev == account.rev
    listed = await fetch(
        session,
        net.host_urls[account.host] + "/xrpc/com.atproto.repo.listRecords",
        repo=account.did,
        collection="app.bsky.feed.post",
        limit=100,
    )
    mine = [r for r in listed.json()["records"] if r["uri"].endswith("/3m5aaaaaaaaa2")]
    assert mine[0]["value"] == value
    async with session.delete(control, params=body) as response:
        assert response.status == 200
    assert "app.bsky.feed.post/3m5aaaaaaaaa2" not in account.current_records()
    async with session.delete(control, params=body) as response:
        assert response.status == 404


async def test_status_and_move_over_http(net: FakeNetwork, session: aiohttp.ClientSession) -> None:
    account = pick(net.world)
    new_host = (account.host + 1) % 3
    async with session.post(
        net.plc_url + "/_fakenet/status", json={"did": account.did, "status": "takendown"}
    ) as r:
        assert r.status == 200
    async with session.post(
        net.plc_url + "/_fakenet/move", json={"did": account.did, "host": new_host}
    ) as r:
        assert r.status == 200
    assert (account.status, account.host) == ("takendown", new_host)


KNOWN = "<a known DID>"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("POST", "/_fakenet/status", {"did": "did:plc:nobody", "status": "active"}, 404),
        ("POST", "/_fakenet/status", {"status": "active"}, 400),
        ("POST", "/_fakenet/status", {"did": KNOWN, "status": "asleep"}, 400),
        ("POST", "/_fakenet/move", {"did": KNOWN, "host": 99}, 400),
        (
            "PUT",
            "/_fakenet/record",
            {"did": KNOWN, "collection": "x", "rkey": "y", "value": {}},
            400,
        ),
    ],
)
async def test_bad_control_requests_say_why(
    net: FakeNetwork,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    payload: dict[str, object],
    status: int,
) -> None:
    if payload.get("did") == KNOWN:
        payload = {**payload, "did": pick(net.world).did}
    async with session.request(method, net.plc_url + path, json=payload) as response:
        assert response.status == status
        assert (await response.json())["message"]


async def test_the_log_is_read_filtered_and_cleared_over_http(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world)
    await fetch(
        session, net.host_urls[account.host] + "/xrpc/com.atproto.sync.getRepo", did=account.did
    )
    await fetch(session, f"{net.plc_url}/{account.did}")
    log = (await fetch(session, net.plc_url + "/_fakenet/log", host=account.host)).json()
    [entry] = log["entries"]
    assert (entry["endpoint"], entry["did"], entry["status"]) == (
        "com.atproto.sync.getRepo",
        account.did,
        200,
    )
    assert entry["sent"] > 0
    plc = (await fetch(session, net.plc_url + "/_fakenet/log", plc="true")).json()["entries"]
    assert [e["did"] for e in plc] == [account.did]
    async with session.delete(net.plc_url + "/_fakenet/log") as response:
        assert (await response.json()) == {"cleared": 2}
    assert len(net.log) == 0
    bad = await fetch(session, net.plc_url + "/_fakenet/log", host="x")
    assert bad.status == 400
