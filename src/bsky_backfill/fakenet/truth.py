"""Ground truth: what an exact backfill of the simulated network must produce.

Computed from the world's own model, never by reading the served CARs, with the time
window rules of DESIGN.md: a record is inside iff ``start <= t < end``, where ``t`` is
its ``createdAt`` (RFC 3339, UTC) unless that is missing, malformed or more than five
minutes after the fetch; then the timestamp of a TID record key; else it is outside.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from bsky_backfill.atproto.syntax import (
    is_valid_did,
    is_valid_tid,
    parse_datetime,
    tid_to_datetime,
)
from bsky_backfill.errors import InvalidSyntax
from bsky_backfill.fakenet.world import World

__all__ = ["ExpectedRepo", "expected_repos", "record_time"]

FUTURE_TOLERANCE: Final = timedelta(minutes=5)
_PLC: Final = re.compile(r"did:plc:[a-z2-7]{24}")  # the method's own rule, stricter than DID syntax
_STATUS: Final = {
    "active": "complete",
    "deactivated": "deactivated",
    "takendown": "takendown",
    "suspended": "suspended",
    "deleted": "not_found",
    "tombstoned": "not_found",
}


@dataclass(frozen=True)
class ExpectedRepo:
    """One DID's expected outcome: its final status and, if complete, its kept records
    as ``(collection, rkey) -> CID string``."""

    did: str
    status: str
    records: dict[tuple[str, str], str]
    rev: str | None = None


def record_time(value: dict[str, Any], rkey: str, fetched_at: datetime) -> datetime | None:
    """The moment a record counts as created, by the rules in this module's docstring."""
    created = value.get("createdAt")
    if isinstance(created, str):
        try:
            moment = parse_datetime(created)
        except InvalidSyntax:
            moment = None
        if moment is not None and moment <= fetched_at + FUTURE_TOLERANCE:
            return moment
    return tid_to_datetime(rkey) if is_valid_tid(rkey) else None


def expected_repos(
    world: World,
    dids: Iterable[str],
    *,
    collections: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    fetched_at: datetime,
    failing: Collection[str] = (),
) -> dict[str, ExpectedRepo]:
    """The expected outcome for each DID (duplicates collapse to one). ``failing``: DIDs
    no client can fetch correctly (``FaultInjector.failing_dids()``), expected ``failed``
    unless their account is unavailable anyway."""
    wanted = set(collections) if collections is not None else None
    out: dict[str, ExpectedRepo] = {}
    for did in dids:
        if not is_valid_did(did) or (did.startswith("did:plc:") and not _PLC.fullmatch(did)):
            out[did] = ExpectedRepo(did, "invalid_did", {})
            continue
        account = world.get(did)
        if account is None:
            out[did] = ExpectedRepo(did, "not_found", {})
            continue
        status = _STATUS[account.status]
        if status == "complete" and did in failing:
            status = "failed"
        if status != "complete":
            out[did] = ExpectedRepo(did, status, {})
            continue
        export = world.export(account)
        kept: dict[tuple[str, str], str] = {}
        for key, value in account.current_records().items():
            collection, rkey = key.split("/", 1)
            if wanted is not None and collection not in wanted:
                continue
            moment = record_time(value, rkey, fetched_at)
            if (start is not None or end is not None) and (
                moment is None
                or (start is not None and moment < start)
                or (end is not None and moment >= end)
            ):
                continue
            kept[(collection, rkey)] = export.record_cids[key].encode("base32")
        out[did] = ExpectedRepo(did, "complete", kept, account.rev)
    return out
