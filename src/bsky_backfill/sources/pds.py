"""Every active repo of some PDS hosts, via ``com.atproto.sync.listRepos`` (cursor paged).

Inactive repos (``active: false``: deactivated, taken down, ...) are skipped: there is
nothing to fetch. Transient failures are retried a few times; a host that keeps failing
stops the listing with its error, since a silently partial DID list would be wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Final

from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.errors import RateLimited, RetryableError

__all__ = ["list_repos"]

_LIST_REPOS: Final = "com.atproto.sync.listRepos"
_PAGE: Final = 1000
_TRIES: Final = 5


async def _page(client: XrpcClient, host: str, cursor: str | None) -> dict[str, object]:
    params: dict[str, str | int] = {"limit": _PAGE}
    if cursor:
        params["cursor"] = cursor
    for attempt in range(_TRIES):
        try:
            return (await client.get_json(host, _LIST_REPOS, params)).data
        except RateLimited as exc:
            await asyncio.sleep(min(exc.retry_after or 2.0**attempt, 60.0))
        except RetryableError:
            if attempt == _TRIES - 1:
                raise
            await asyncio.sleep(2.0**attempt)
    return (await client.get_json(host, _LIST_REPOS, params)).data


async def list_repos(client: XrpcClient, hosts: Iterable[str]) -> AsyncIterator[str]:
    """Yield the DID of every active repo on each host, host by host, page by page."""
    for host in hosts:
        cursor: str | None = None
        while True:
            data = await _page(client, host, cursor)
            repos = data.get("repos")
            for repo in repos if isinstance(repos, list) else []:
                if (
                    isinstance(repo, dict)
                    and repo.get("active", True)
                    and isinstance(repo.get("did"), str)
                ):
                    yield repo["did"]
            next_cursor = data.get("cursor")
            if not isinstance(next_cursor, str) or not repos or next_cursor == cursor:
                break
            cursor = next_cursor
