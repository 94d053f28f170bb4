"""The identity cache's table: entries as JSON text keyed by DID, with their expiry.

The entry format is versioned (``"v": 1``) so a later change can still read old rows, or
drop them (an unreadable entry is treated as missing: the DID is simply resolved again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bsky_backfill.atproto.identity import CachedIdentity, Identity, SigningKey
from bsky_backfill.state.sql._util import dialect_insert
from bsky_backfill.state.sql.schema import identities

__all__ = ["decode_entry", "encode_entry", "expire", "load", "save"]

_VERSION: Final = 1


def encode_entry(entry: CachedIdentity) -> str:
    """The JSON text stored for ``entry`` (its DID and expiry are columns of their own)."""
    body: dict[str, Any] = {"v": _VERSION}
    if entry.identity is not None:
        body["pds"] = entry.identity.pds
        body["handle"] = entry.identity.handle
        body["key"] = [entry.identity.signing_key.kind, entry.identity.signing_key.multibase]
    else:
        body["failure"] = entry.failure
        body["message"] = entry.message
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def decode_entry(did: str, expires_at: float, text: str) -> CachedIdentity | None:
    """The entry stored as ``text``, or None if it cannot be read (another version, damage)."""
    try:
        body = json.loads(text)
        if body.get("v") != _VERSION:
            return None
        if "failure" in body:
            return CachedIdentity(
                did, expires_at, failure=body["failure"], message=str(body.get("message", ""))
            )
        kind, multibase = body["key"]
        identity = Identity(did, body["pds"], SigningKey(kind, multibase), body.get("handle"))
        return CachedIdentity(did, expires_at, identity=identity)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


async def load(conn: AsyncConnection, chunk: Sequence[str], now: float) -> list[CachedIdentity]:
    """Unexpired entries for ``chunk``'s DIDs (at most ``IN_CHUNK`` of them)."""
    query = select(identities.c.did, identities.c.expires_at, identities.c.entry).where(
        identities.c.did.in_(chunk), identities.c.expires_at > now
    )
    entries = (decode_entry(*row) for row in await conn.execute(query))
    return [entry for entry in entries if entry is not None]


async def save(conn: AsyncConnection, chunk: Sequence[CachedIdentity]) -> None:
    """Upsert ``chunk``; the last entry for a DID wins."""
    latest = {entry.did: entry for entry in chunk}
    if not latest:
        return
    stmt = dialect_insert(conn, identities)
    stmt = stmt.on_conflict_do_update(
        index_elements=[identities.c.did],
        set_={"expires_at": stmt.excluded.expires_at, "entry": stmt.excluded.entry},
    )
    rows = [
        {"did": e.did, "expires_at": e.expires_at, "entry": encode_entry(e)}
        for e in latest.values()
    ]
    await conn.execute(stmt, rows)


async def expire(conn: AsyncConnection, now: float) -> int:
    """Delete entries expired at ``now``; return how many."""
    result = await conn.execute(identities.delete().where(identities.c.expires_at <= now))
    return result.rowcount
