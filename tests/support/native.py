"""Check the C reader (``_fastrepo.c``) against the Python reader on one CAR."""

from __future__ import annotations

from typing import Any

from bsky_backfill.atproto.car import CarLimits, MemoryCar
from bsky_backfill.atproto.cid import read_varint
from bsky_backfill.atproto.mst import KeyRanges
from bsky_backfill.atproto.native import fastrepo
from bsky_backfill.atproto.repo import RecordParts, read_repo
from bsky_backfill.atproto.syntax import parse_datetime
from tests.support import require

__all__ = ["comparable", "compiled", "parts_both_ways"]


def compiled() -> Any:
    """The C module; skips (fails under CI) where it was not compiled."""
    require(fastrepo is not None, "the C reader (pip install -e . with a C compiler)")
    return fastrepo


def comparable(parts: list[RecordParts]) -> list[RecordParts]:
    """``parts`` as the Python reader gives them: the C reader also parses ``createdAt``
    in the common form (``created_moment``), checked here against the Python parser."""
    for p in parts:
        if p.created_moment is not None:
            assert p.created_moment == parse_datetime(p.created_at)
    return [p._replace(created_moment=None) for p in parts]


def parts_both_ways(car: bytes, *, all_native: bool, **read: Any) -> list[RecordParts]:
    """The records of ``car`` as the C and the Python reader give them, asserted equal.

    ``all_native``: also assert the C reader took every step itself (no fallback to
    Python, but for records whose ``createdAt`` is not a string) — what real repos must
    get, or the speed is not there.
    ``read``: arguments for ``read_repo`` (``signing_key``, ``collections``, ``verify``).
    """
    native = compiled()
    with read_repo(car, **read) as repo:
        fast = list(repo.record_parts())
        commit = repo.commit
    with read_repo(car, native=False, **read) as repo:
        slow = list(repo.record_parts())
    assert comparable(fast) == slow
    assert all(type(p) is RecordParts for p in fast)
    if all_native:
        length, pos = read_varint(car, 0)
        assert native.scan(car, pos + length, CarLimits().max_block_bytes) is not None
        store = MemoryCar(car)
        check = read.get("verify", "full") != "none"
        full = read.get("verify", "full") == "full"
        collections = read.get("collections")
        ranges = None if collections is None else KeyRanges(collections).ranges
        assert store.table is not None
        records = native.walk(store.data, store.table, commit.data_cid, check, full, ranges)
        assert records is not None
        rows, end = native.rows(
            RecordParts, store.data, store.table, commit.did, records, 0, len(slow) + 1, check
        )
        assert end == len(records)
        # Only a createdAt that is not a string (the simulated network writes some) is
        # left to Python in a real-shaped repo.
        handed_over = [i for i, row in enumerate(rows) if row.json is None]
        assert all(not isinstance(slow[i].created_at, str | None) for i in handed_over)
    return fast
