"""One simulated PDS host: the XRPC queries a backfill uses, with the reference PDS's
answers, error names and statuses (checked against pds 0.4.217 run locally; where 0.5.x
differs, 0.5.x: bad parameters are 400 ``InvalidRequest``, not 500).

- getRepo, getLatestCommit, describeRepo: 400 ``RepoNotFound`` for an account not on this
  host (never here, migrated away, deleted, tombstoned), ``RepoTakendown``,
  ``RepoDeactivated``, ``RepoSuspended`` (lexicon; the reference PDS has no suspension).
- getRepoStatus: those accounts answer 200 with ``active: false`` and their status
  (the PDS reads status as admin-or-self there); unknown ones ``RepoNotFound``.
- listRecords: any account that is not active is 400 ``InvalidRequest``
  ("Could not find repo"), as the PDS's actor lookup skips them.
- listRepos: every account on the host but deleted and tombstoned ones, in creation order.
- an unknown method: 401 ``AuthMissing`` (the PDS would proxy it to an AppView, which
  needs auth).

``repo`` parameters take DIDs only: handles are not resolved (a backfill never sends them).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from bsky_backfill.atproto.cbor import decode_record, to_json
from bsky_backfill.atproto.cid import cid_to_str
from bsky_backfill.atproto.syntax import is_valid_did, is_valid_nsid, is_valid_tid
from bsky_backfill.fakenet.http import CAR_TYPE, Reply, RequestInfo, json_reply, xrpc_error
from bsky_backfill.fakenet.plc import PlcDirectory
from bsky_backfill.fakenet.repo_writer import RepoExport, encode_car
from bsky_backfill.fakenet.repos import RepoStore
from bsky_backfill.fakenet.world import Account, World

__all__ = ["InvalidParameter", "PdsHost"]

_NOT_HERE: Final = frozenset({"deleted", "tombstoned"})
_REFUSED: Final = {
    "takendown": ("RepoTakendown", "Repo has been takendown"),
    "deactivated": ("RepoDeactivated", "Repo has been deactivated"),
    "suspended": ("RepoSuspended", "Repo has been suspended"),
}
_INTEGER: Final = re.compile(r"-?\d{1,9}")


class InvalidParameter(Exception):
    """A missing or malformed parameter; its message is the InvalidRequest message."""


class PdsHost:
    """Answers XRPC calls for host ``index``; its replies go through the server's pipeline."""

    def __init__(self, index: int, world: World, repos: RepoStore, plc: PlcDirectory) -> None:
        self.index = index
        self._world = world
        self._repos = repos
        self._plc = plc
        self._methods: dict[str, Callable[[Mapping[str, str]], Awaitable[Reply]]] = {
            "com.atproto.sync.getRepo": self.get_repo,
            "com.atproto.sync.getLatestCommit": self.get_latest_commit,
            "com.atproto.sync.getRepoStatus": self.get_repo_status,
            "com.atproto.sync.listRepos": self.list_repos,
            "com.atproto.repo.listRecords": self.list_records,
            "com.atproto.repo.describeRepo": self.describe_repo,
        }

    async def handle(self, info: RequestInfo) -> Reply:
        """The answer to one XRPC call (``info.nsid`` set)."""
        method = self._methods.get(info.nsid or "")
        if method is None:
            return xrpc_error(401, "AuthMissing", "Authentication Required")
        if info.method != "GET":
            message = f"Incorrect HTTP method ({info.method}) expected GET"
            return xrpc_error(400, "InvalidRequest", message)
        try:
            return await method(info.params)
        except InvalidParameter as problem:
            return xrpc_error(400, "InvalidRequest", str(problem))

    # -- sync ----------------------------------------------------------------------------

    async def get_repo(self, params: Mapping[str, str]) -> Reply:
        """The repo as a CAR, streamed; with ``since``, only blocks newer than that rev."""
        account = self._available(_did(params, "did"))
        if isinstance(account, Reply):
            return account
        since = params.get("since")
        if since is not None and not is_valid_tid(since):
            raise InvalidParameter(f"since must be a valid tid, got {since!r}")
        export = await self._repos.export(account)
        body = export.car if since is None else self._car_since(account, export, since)
        return Reply(200, body, content_type=CAR_TYPE, chunked=True)

    def _car_since(self, account: Account, export: RepoExport, since: str) -> bytes:
        """Blocks written after rev ``since``: none when the repo is not newer, everything
        for a rev this repo never had, else what the old version lacked (no deletions)."""
        commit = export.commit_cid.cid_bytes
        if since >= export.rev:
            return encode_car([export.commit_cid], [])
        old = self._world.blocks_since(account, since)
        if old is None:
            return export.car
        # Newest first, like the PDS: the commit, then the rest in reverse write order.
        order = [commit, *(c for c in reversed(export.blocks) if c != commit)]
        return encode_car(
            [export.commit_cid], ((c, export.blocks[c]) for c in order if c not in old)
        )

    async def get_latest_commit(self, params: Mapping[str, str]) -> Reply:
        account = self._available(_did(params, "did"))
        if isinstance(account, Reply):
            return account
        return json_reply({"cid": await self._repos.head(account), "rev": account.rev})

    async def get_repo_status(self, params: Mapping[str, str]) -> Reply:
        did = _did(params, "did")
        account = self._here(did)
        if account is None:
            return _not_found(did)
        if account.status == "active":
            return json_reply({"did": did, "active": True, "rev": account.rev})
        return json_reply({"did": did, "active": False, "status": account.status})

    async def list_repos(self, params: Mapping[str, str]) -> Reply:
        """Accounts on this host by index (creation order); the cursor is the last index."""
        limit = _int(params, "limit", default=500, low=1, high=1000)
        after = -1
        if "cursor" in params:
            if not params["cursor"].isdigit():
                raise InvalidParameter("Malformed cursor")
            after = int(params["cursor"])
        listed = [
            a
            for a in self._world.on_host(self.index)
            if a.seed.index > after and a.status not in _NOT_HERE
        ][:limit]
        # Heads of repos not built yet are built side by side, in the build threads.
        repos = await asyncio.gather(*(self._repo_entry(a) for a in listed))
        body: dict[str, Any] = {"repos": list(repos)}
        if listed:
            body["cursor"] = str(listed[-1].seed.index)
        return json_reply(body)

    async def _repo_entry(self, account: Account) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "did": account.did,
            "head": await self._repos.head(account),
            "rev": account.rev,
            "active": account.status == "active",
        }
        if account.status != "active":
            entry["status"] = account.status
        return entry

    # -- repo ----------------------------------------------------------------------------

    async def list_records(self, params: Mapping[str, str]) -> Reply:
        """One page of a collection, newest rkey first (``reverse=true``: oldest first)."""
        repo = _required(params, "repo")
        collection = _required(params, "collection")
        if not is_valid_nsid(collection):
            raise InvalidParameter(f"collection must be a valid nsid, got {collection!r}")
        limit = _int(params, "limit", default=50, low=1, high=100)
        reverse = _bool(params, "reverse")
        account = self._here(repo)
        if account is None or account.status != "active":
            return xrpc_error(400, "InvalidRequest", f"Could not find repo: {repo}")
        page = await self._repos.page(account, collection, limit, params.get("cursor"), reverse)
        records = [
            {
                "uri": f"at://{account.did}/{collection}/{rkey}",
                "cid": cid_to_str(cid),
                "value": decode_record(block, cid),
            }
            for rkey, cid, block in page.records
        ]
        body: dict[str, Any] = {"records": records}
        if page.cursor is not None:
            body["cursor"] = page.cursor
        return Reply(200, to_json(body).encode())

    async def describe_repo(self, params: Mapping[str, str]) -> Reply:
        account = self._available(_did(params, "repo"))
        if isinstance(account, Reply):
            return account
        return json_reply(
            {
                "handle": account.seed.handle,
                "did": account.did,
                "didDoc": await self._plc.document(account),
                "collections": await self._repos.collections(account),
                "handleIsCorrect": True,
            }
        )

    # -- accounts ------------------------------------------------------------------------

    def _here(self, did: str) -> Account | None:
        """The account if this host holds it (deleted and tombstoned ones are gone)."""
        account = self._world.get(did)
        if account is None or account.host != self.index or account.status in _NOT_HERE:
            return None
        return account

    def _available(self, did: str) -> Account | Reply:
        """The account if its repo may be served, else the refusal to send."""
        account = self._here(did)
        if account is None:
            return _not_found(did)
        refused = _REFUSED.get(account.status)
        if refused is not None:
            return xrpc_error(400, refused[0], f"{refused[1]}: {did}")
        return account


def _not_found(did: str) -> Reply:
    return xrpc_error(400, "RepoNotFound", f"Could not find repo for DID: {did}")


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidParameter(f'Params must have the property "{name}"')
    return value


def _did(params: Mapping[str, str], name: str) -> str:
    did = _required(params, name)
    if not is_valid_did(did):
        raise InvalidParameter(f"{name} must be a valid did, got {did!r}")
    return did


def _int(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidParameter(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false")
    if raw not in ("true", "false"):
        raise InvalidParameter(f"{name} must be a boolean, got {raw!r}")
    return raw == "true"
