"""Our XRPC client and identity resolver against the real reference PDS and PLC directory.

Account states (deactivated, taken down, deleted) and rate-limit headers are the real
server's answers, not a simulation of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from bsky_backfill.atproto.identity import IdentityOptions, IdentityResolver
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.atproto.xrpc import XrpcClient, XrpcOptions
from bsky_backfill.errors import (
    DidNotFound,
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoTakendown,
    RepoTooLarge,
    RepoUnavailable,
)
from tests.support.realpds import Account, PdsClient, RealNetwork, RepoSnapshot
from tests.support.realpds_population import POST, timestamp

pytestmark = pytest.mark.realpds

GET_REPO = "com.atproto.sync.getRepo"
UNKNOWN_DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


@dataclass(frozen=True)
class Unavailable:
    """Accounts put into each unavailable state, with a record written before."""

    deactivated: Account
    takendown: Account
    deleted: Account


@pytest.fixture(scope="module")
def unavailable(realpds_client: PdsClient) -> Unavailable:
    """Three fresh accounts: one deactivated (by itself), one taken down, one deleted."""
    accounts = {}
    for name in ("erin", "frank", "grace"):
        account = realpds_client.create_account(name)
        realpds_client.create_record(account, POST, {"text": "hi", "createdAt": timestamp(0)})
        accounts[name] = account
    realpds_client.deactivate_account(accounts["erin"])
    realpds_client.takedown(accounts["frank"].did)
    realpds_client.delete_account(accounts["grace"].did)
    return Unavailable(accounts["erin"], accounts["frank"], accounts["grace"])


# --- getRepo ------------------------------------------------------------------------------


async def test_get_repo_body_reads_as_the_servers_records(
    realpds: RealNetwork, realpds_accounts: dict[str, RepoSnapshot]
) -> None:
    """A small spool threshold sends the big repo to a file; both forms read the same."""
    options = XrpcOptions(spool_threshold=64 * 1024)
    async with XrpcClient.open(options) as client:
        for name in ("alice", "carol"):
            snap = realpds_accounts[name]
            with await client.get_body(realpds.pds_url, GET_REPO, {"did": snap.did}) as body:
                assert body.status == 200
                assert (body.path is not None) == (body.size > options.spool_threshold)
                with read_repo(body.content, signing_key=snap.signing_key(), did=snap.did) as repo:
                    got = {(r.collection, r.rkey, r.cid) for r in repo.records}
            assert got == snap.expected
            if body.path is not None:
                assert not body.path.exists()  # closing the body removed its spool file


async def test_get_repo_over_the_cap_is_repo_too_large(
    realpds: RealNetwork, realpds_accounts: dict[str, RepoSnapshot]
) -> None:
    snap = realpds_accounts["carol"]
    async with XrpcClient.open() as client:
        with pytest.raises(RepoTooLarge):
            await client.get_body(
                realpds.pds_url,
                GET_REPO,
                {"did": snap.did},
                max_bytes=len(snap.car) // 2,
                too_large=RepoTooLarge,
            )


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("deactivated", RepoDeactivated),
        ("takendown", RepoTakendown),
        ("deleted", RepoNotFound),
        ("never existed", RepoNotFound),
    ],
)
async def test_unavailable_repos_raise_their_typed_error(
    realpds: RealNetwork,
    unavailable: Unavailable,
    state: str,
    error: type[RepoUnavailable],
) -> None:
    did = UNKNOWN_DID if state == "never existed" else getattr(unavailable, state).did
    async with XrpcClient.open() as client:
        with pytest.raises(error) as caught:
            await client.get_body(realpds.pds_url, GET_REPO, {"did": did})
        assert type(caught.value) is error
        assert caught.value.did == did
        # getLatestCommit, the cheap "has it changed?" probe, answers the same way.
        with pytest.raises(error):
            await client.get_json(realpds.pds_url, "com.atproto.sync.getLatestCommit", {"did": did})


async def test_list_repos_reports_the_states(
    realpds: RealNetwork, unavailable: Unavailable
) -> None:
    async with XrpcClient.open() as client:
        answer = await client.get_json(
            realpds.pds_url, "com.atproto.sync.listRepos", {"limit": 1000}
        )
    listed = answer.data["repos"]
    assert isinstance(listed, list)
    repos = {r["did"]: r for r in listed}
    assert repos[unavailable.deactivated.did]["active"] is False
    assert repos[unavailable.deactivated.did]["status"] == "deactivated"
    assert repos[unavailable.takendown.did]["active"] is False
    assert repos[unavailable.takendown.did]["status"] == "takendown"
    assert unavailable.deleted.did not in repos


# --- rate limits --------------------------------------------------------------------------


async def test_rate_limit_headers_and_the_429(realpds_ratelimited: RealNetwork) -> None:
    """20 requests per 10 s: headers count down, reset is absolute, the 21st is a 429."""
    limit, window = 20, 10.0
    async with XrpcClient.open() as client:
        remaining = []
        for _ in range(limit):
            answer = await client.get_json(
                realpds_ratelimited.pds_url, "com.atproto.server.describeServer"
            )
            info = answer.rate_limit
            now = time.time()
            assert info.limit == limit
            assert info.policy_limit == limit
            assert info.policy_window == window
            assert info.reset_at is not None
            assert now - 1 <= info.reset_at <= now + window + 1  # absolute epoch seconds
            assert info.remaining is not None
            remaining.append(info.remaining)
        assert remaining == list(range(limit - 1, -1, -1))
        with pytest.raises(RateLimited) as caught:
            await client.get_json(realpds_ratelimited.pds_url, "com.atproto.server.describeServer")
    assert caught.value.retry_after is not None
    assert 0 <= caught.value.retry_after <= window + 1
    assert caught.value.host == realpds_ratelimited.pds_url.removeprefix("http://")


# --- identity -----------------------------------------------------------------------------


async def test_identity_resolver_against_the_real_plc(
    realpds: RealNetwork, realpds_accounts: dict[str, RepoSnapshot]
) -> None:
    options = IdentityOptions(plc_url=realpds.plc_url)
    async with XrpcClient.open() as client:
        resolver = IdentityResolver(client, options)
        for snap in realpds_accounts.values():
            identity = await resolver.resolve(snap.did)
            assert identity.did == snap.did
            assert identity.pds == realpds.pds_url
            assert identity.handle == snap.handle
            assert identity.signing_key.public_key().did_key == snap.signing_key()
        with pytest.raises(DidNotFound):
            await resolver.resolve(UNKNOWN_DID)
