"""The simulated PDS endpoints, served on loopback: answers, error names and statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import libipld
import pytest

from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.fakenet.server import FakeNetwork
from tests.support.fakenet import fetch, pick, small_spec

SYNC = "/xrpc/com.atproto.sync."
REPO = "/xrpc/com.atproto.repo."


@pytest.fixture
async def net() -> AsyncIterator[FakeNetwork]:
    async with FakeNetwork(small_spec()) as network:
        yield network


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def blocks_of(car: bytes) -> set[bytes]:
    _, blocks = libipld.decode_car(car)
    return set(blocks)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("deactivated", "RepoDeactivated"),
        ("takendown", "RepoTakendown"),
        ("suspended", "RepoSuspended"),
        ("deleted", "RepoNotFound"),
        ("tombstoned", "RepoNotFound"),
    ],
)
async def test_an_unavailable_repo_gets_the_reference_error(
    net: FakeNetwork, session: aiohttp.ClientSession, status: str, error: str
) -> None:
    account = pick(net.world)
    base = net.host_urls[account.host]
    net.set_status(account.did, status)
    for method in ("getRepo", "getLatestCommit"):
        answer = await fetch(session, base + SYNC + method, did=account.did)
        assert (answer.status, answer.error) == (400, error)
    answer = await fetch(session, base + REPO + "describeRepo", repo=account.did)
    assert (answer.status, answer.error) == (400, error)
    # listRecords looks actors up without inactive ones: a plain InvalidRequest.
    answer = await fetch(
        session, base + REPO + "listRecords", repo=account.did, collection="app.bsky.feed.like"
    )
    assert (answer.status, answer.error) == (400, "InvalidRequest")


@pytest.mark.parametrize("status", ["deactivated", "takendown", "suspended"])
async def test_get_repo_status_reports_an_inactive_account(
    net: FakeNetwork, session: aiohttp.ClientSession, status: str
) -> None:
    account = pick(net.world)
    base = net.host_urls[account.host]
    active = (await fetch(session, base + SYNC + "getRepoStatus", did=account.did)).json()
    assert active == {"did": account.did, "active": True, "rev": account.rev}
    net.set_status(account.did, status)
    answer = await fetch(session, base + SYNC + "getRepoStatus", did=account.did)
    assert answer.json() == {"did": account.did, "active": False, "status": status}
    net.set_status(account.did, "deleted")
    answer = await fetch(session, base + SYNC + "getRepoStatus", did=account.did)
    assert (answer.status, answer.error) == (400, "RepoNotFound")


async def test_a_migrated_account_is_not_found_on_its_old_host(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world)
    old, new = account.host, (account.host + 1) % 3
    net.move(account.did, new)
    gone = await fetch(session, net.host_urls[old] + SYNC + "getRepo", did=account.did)
    assert (gone.status, gone.error) == (400, "RepoNotFound")
    moved = await fetch(session, net.host_urls[new] + SYNC + "getRepo", did=account.did)
    assert moved.status == 200
    document = (await fetch(session, f"{net.plc_url}/{account.did}")).json()
    assert document["service"][0]["serviceEndpoint"] == net.host_urls[new]


async def test_list_repos_pages_cover_every_account_of_the_host_once(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    net.set_status(pick(net.world).did, "deactivated")
    for host, base in enumerate(net.host_urls):
        seen: list[dict[str, object]] = []
        cursor: dict[str, str] = {}
        while True:
            page = (await fetch(session, base + SYNC + "listRepos", limit=7, **cursor)).json()
            seen += page["repos"]
            if "cursor" not in page:
                break
            cursor = {"cursor": page["cursor"]}
        expected = {
            a.did: a for a in net.world.on_host(host) if a.status not in ("deleted", "tombstoned")
        }
        assert sorted(r["did"] for r in seen) == sorted(expected)  # type: ignore[type-var]
        for repo in seen:
            account = expected[repo["did"]]  # type: ignore[index]
            assert repo["rev"] == account.rev
            assert repo["active"] == (account.status == "active")
            assert repo.get("status") == (None if account.status == "active" else account.status)


async def test_list_repos_refuses_a_bad_cursor_or_limit(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    base = net.host_urls[0] + SYNC + "listRepos"
    bad_cursor = await fetch(session, base, cursor="garbage")
    assert (bad_cursor.status, bad_cursor.json()["message"]) == (400, "Malformed cursor")
    for limit in (0, 1001, "x"):
        assert (await fetch(session, base, limit=limit)).error == "InvalidRequest"


async def test_get_repo_streams_a_verified_car_matching_get_latest_commit(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world, min_records=20)
    base = net.host_urls[account.host]
    async with session.get(base + SYNC + "getRepo", params={"did": account.did}) as response:
        car = await response.read()
        assert response.headers["Content-Type"] == "application/vnd.ipld.car"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
    latest = (await fetch(session, base + SYNC + "getLatestCommit", did=account.did)).json()
    key = account.seed.keypair.did_key
    with read_repo(car, signing_key=key, did=account.did) as repo:
        assert (repo.commit_cid, repo.rev) == (latest["cid"], latest["rev"])
        assert sum(1 for _ in repo.records) == account.seed.record_count


async def test_get_repo_since_sends_only_the_blocks_written_after_that_rev(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world, min_records=20)
    url = net.host_urls[account.host] + SYNC + "getRepo"
    old_rev = account.rev
    old = blocks_of((await fetch(session, url, did=account.did)).body)
    net.put_record(account.did, "app.bsky.feed.post", "3m5aaaaaaaaa2", {"text": "new"})
    full = blocks_of((await fetch(session, url, did=account.did)).body)
    partial = await fetch(session, url, did=account.did, since=old_rev)
    assert partial.status == 200
    assert blocks_of(partial.body) == full - old
    assert len(full - old) >= 3  # the commit, the record, and the nodes above it
    current = await fetch(session, url, did=account.did, since=account.rev)
    assert blocks_of(current.body) == set()
    before_all = await fetch(session, url, did=account.did, since="2222222222222")
    assert blocks_of(before_all.body) == full
    malformed = await fetch(session, url, did=account.did, since="yesterday")
    assert (malformed.status, malformed.error) == (400, "InvalidRequest")


async def test_list_records_pages_newest_rkey_first_and_reverse(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world, min_records=40)
    url = net.host_urls[account.host] + REPO + "listRecords"
    collection = "app.bsky.feed.like"
    rkeys = sorted(
        k.split("/")[1] for k in account.current_records() if k.startswith(collection + "/")
    )
    assert len(rkeys) > 3

    async def crawl(**options: str | int) -> list[str]:
        out: list[str] = []
        cursor: dict[str, str] = {}
        while True:
            query = {"repo": account.did, "collection": collection, "limit": 3, **options}
            answer = await fetch(session, url, **query, **cursor)
            page = answer.json()
            assert answer.status == 200, page
            out += [r["uri"].rsplit("/", 1)[1] for r in page["records"]]
            if not page["records"]:
                assert "cursor" not in page
                return out
            cursor = {"cursor": page["cursor"]}

    assert await crawl() == rkeys[::-1]
    assert await crawl(reverse="true") == rkeys


async def test_list_records_values_are_atproto_json_with_their_cids(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world, min_records=60)
    export = net.world.export(account)
    url = net.host_urls[account.host] + REPO + "listRecords"
    page = await fetch(session, url, repo=account.did, collection="app.bsky.feed.post", limit=100)
    records = page.json()["records"]
    assert records
    for record in records:
        rkey = record["uri"].rsplit("/", 1)[1]
        assert record["cid"] == export.record_cids[f"app.bsky.feed.post/{rkey}"].encode("base32")
        assert record["value"]["$type"] == "app.bsky.feed.post"
    images = [r["value"]["embed"] for r in records if "images" in r["value"].get("embed", {})]
    if images:
        assert set(images[0]["images"][0]["image"]["ref"]) == {"$link"}


async def test_describe_repo_lists_the_collections(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    account = pick(net.world, min_records=30)
    url = net.host_urls[account.host] + REPO + "describeRepo"
    answer = (await fetch(session, url, repo=account.did)).json()
    assert answer["collections"] == sorted({k.split("/")[0] for k in account.current_records()})
    assert (answer["did"], answer["handle"]) == (account.did, account.seed.handle)
    assert answer["didDoc"]["id"] == account.did


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        (SYNC + "getRepo", {"did": "not-a-did"}, 400, "InvalidRequest"),
        (SYNC + "getRepo", {}, 400, "InvalidRequest"),
        (SYNC + "getRepo", {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, 400, "RepoNotFound"),
        (REPO + "listRecords", {"repo": "did:plc:x", "collection": "not an nsid"}, 400, None),
        (
            REPO + "listRecords",
            {"repo": "did:plc:x", "collection": "a.b.c", "limit": "101"},
            400,
            None,
        ),
        ("/xrpc/com.example.unknownMethod", {}, 401, "AuthMissing"),
    ],
)
async def test_bad_calls_get_the_reference_answers(
    net: FakeNetwork,
    session: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    answer = await fetch(session, net.host_urls[0] + path, **params)
    assert answer.status == status
    assert answer.error == (error or "InvalidRequest")


async def test_other_paths_are_plain_404s_without_rate_limit_headers(
    net: FakeNetwork, session: aiohttp.ClientSession
) -> None:
    answer = await fetch(session, net.host_urls[0] + "/nothing/here")
    assert answer.status == 404
    assert "RateLimit-Limit" not in answer.headers
    health = await fetch(session, net.host_urls[0] + "/xrpc/_health")
    assert health.status == 200
    assert "RateLimit-Limit" not in health.headers


async def test_a_query_must_be_a_get(net: FakeNetwork, session: aiohttp.ClientSession) -> None:
    url = net.host_urls[0] + SYNC + "listRepos"
    async with session.post(url) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "InvalidRequest"
