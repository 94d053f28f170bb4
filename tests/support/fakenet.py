"""Helpers for tests against the simulated network (``bsky_backfill.fakenet``) on loopback."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.spec import HostSpec, NetworkSpec
from bsky_backfill.fakenet.world import Account, World

__all__ = ["Fetched", "fetch", "pick", "small_spec"]


def small_spec(
    *, hosts: HostSpec | tuple[HostSpec, ...] | None = None, **population: Any
) -> NetworkSpec:
    """A small network (seed 7, 120 accounts on 3 hosts, host i's account i did:web);
    ``hosts`` defaults to the reference PDS's limits."""
    options: dict[str, Any] = {"seed": 7, "accounts": 120, "hosts": 3, "web_share": 1.0}
    options.update(population)
    return NetworkSpec(PopulationSpec(**options), hosts=hosts or HostSpec())


@dataclass(frozen=True)
class Fetched:
    """One answer: status, headers and the whole body."""

    status: int
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        """The XRPC error name of an error answer."""
        data = self.json()
        return data.get("error") if isinstance(data, dict) else None


async def fetch(session: aiohttp.ClientSession, url: str, **params: str | int) -> Fetched:
    """GET ``url`` with ``params`` and read the whole answer."""
    query = {key: str(value) for key, value in params.items()}
    async with session.get(url, params=query) as response:
        body = await response.read()
        return Fetched(response.status, dict(response.headers), body)


def pick(
    world: World,
    *,
    status: str = "active",
    min_records: int = 2,
    max_records: int = 400,
    web: bool = False,
    skip: int = 0,
) -> Account:
    """The ``skip``-th account of the world with ``status`` and a record count in
    ``min_records..max_records``, did:web or did:plc."""
    found = [
        a
        for a in world
        if a.status == status
        and min_records <= a.seed.record_count <= max_records
        and a.did.startswith("did:web:") == web
    ]
    return found[skip]
