"""Walk a repo's Merkle Search Tree in key order, checking its structure as it goes.

A node is ``{l: CID|null, e: [{p, k, v, t}]}``: ``l`` is the subtree left of every entry,
each entry's key is the previous key's first ``p`` bytes + ``k``, ``v`` the record CID and
``t`` the subtree between this entry and the next. A key's layer is the number of leading
zero bits of sha256(key) // 2; every key of a node sits on the node's layer, and child
nodes are exactly one layer down.

Checks (always): node shape, key syntax, keys strictly increasing *within the bounds the
parent gives each subtree* (which also rules out cycles and shared subtrees), child layers
never below 0, no empty nodes other than the empty repo's root or a pass-through ``l``.
With ``check_layers`` (verify=full) also every key's layer. When only some collections are
wanted, subtrees whose bounds exclude them are never fetched.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from hashlib import sha256
from typing import Any, Final

from bsky_backfill.atproto.cbor import decode_block
from bsky_backfill.atproto.cid import cid_to_str
from bsky_backfill.errors import MalformedMst

__all__ = ["KeyRanges", "key_layer", "walk_mst", "walk_mst_runs"]

# collection/rkey: an NSID-shaped collection and a record key, both ASCII.
_KEY_RE: Final = re.compile(rb"[a-zA-Z][a-zA-Z0-9.-]{0,316}/[a-zA-Z0-9._:~-]{1,512}")
_MAX_LAYER: Final = 128  # sha256 has 256 bits; two per layer

Fetch = Callable[[bytes], bytes]
"""Given a binary CID, return the block's bytes (hash-checked as the caller decides)."""


def key_layer(key: bytes) -> int:
    """The MST layer of ``key``: leading zero bits of its sha256, divided by two."""
    return _layer_of_digest(sha256(key).digest())


def _layer_of_digest(digest: bytes) -> int:
    if digest[0] >= 0x40:  # fewer than two leading zero bits: layer 0, three keys in four
        return 0
    return (256 - int.from_bytes(digest, "big").bit_length()) // 2


class KeyRanges:
    """The key ranges of a set of collections: ``[c + "/", c + "0")`` for each ``c``."""

    __slots__ = ("_ranges", "_starts", "_stops")

    def __init__(self, collections: Iterable[str]) -> None:
        # "0" is the byte after "/", so [c/, c0) holds exactly the keys of collection c.
        # No collection name is a prefix of another followed by "/", so ranges never overlap.
        self._ranges = sorted({(c.encode() + b"/", c.encode() + b"0") for c in collections})
        self._starts = [start for start, _ in self._ranges]
        self._stops = [stop for _, stop in self._ranges]

    @property
    def ranges(self) -> list[tuple[bytes, bytes]]:
        """``(start, stop)`` per collection, sorted."""
        return list(self._ranges)

    def contains(self, key: bytes) -> bool:
        # Called for every key of the walk (6 % of the engine's CPU as a generator).
        i = bisect_right(self._starts, key) - 1
        return i >= 0 and key < self._stops[i]

    def overlaps(self, lo: bytes | None, hi: bytes | None) -> bool:
        """Whether any wanted key can lie strictly between ``lo`` and ``hi`` (None: open)."""
        return any(
            (hi is None or start < hi) and (lo is None or stop > lo) for start, stop in self._ranges
        )


def _bad(cid: bytes, problem: str) -> MalformedMst:
    return MalformedMst(f"MST node {cid_to_str(cid)} {problem}")


def _node(fetch: Fetch, cid: bytes) -> tuple[bytes | None, list[Any]]:
    node = decode_block(fetch(cid), cid)
    if not isinstance(node, dict) or set(node) != {"l", "e"}:
        raise _bad(cid, "is not a {l, e} map")
    left, entries = node["l"], node["e"]
    if not (left is None or isinstance(left, bytes)) or not isinstance(entries, list):
        raise _bad(cid, "has a bad 'l' or 'e' field")
    return left, entries


def walk_mst(
    fetch: Fetch,
    root: bytes,
    *,
    wanted: KeyRanges | None = None,
    check_layers: bool = True,
) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, record CID)`` for every key of the tree under ``root``, in key order.

    ``wanted`` limits the walk to those key ranges, skipping other subtrees unfetched.
    Raises ``MalformedMst`` for a tree that breaks the rules above, and whatever ``fetch``
    raises (``TruncatedRepo`` for a missing block, ``CorruptBlock`` for a bad hash).
    """
    for run in walk_mst_runs(fetch, root, wanted=wanted, check_layers=check_layers):
        yield from run


def walk_mst_runs(
    fetch: Fetch,
    root: bytes,
    *,
    wanted: KeyRanges | None = None,
    check_layers: bool = True,
) -> Iterator[list[tuple[bytes, bytes]]]:
    """:func:`walk_mst` in runs: lists of consecutive ``(key, record CID)`` pairs, so a
    hot consumer loops over lists instead of resuming a generator per record.
    """
    left, entries = _node(fetch, root)
    if not entries:
        if left is not None:
            raise MalformedMst("the MST root is an empty node pointing to a subtree")
        return
    # Unchecked layers still count down from the top, so a chain of empty nodes ends.
    layer = _root_layer(entries) if check_layers else _MAX_LAYER
    # One iterator per node on the path from the root, over that node's segments.
    stack: list[Iterator[Any]] = [
        iter(_expand(root, left, entries, layer, None, None, wanted, check_layers))
    ]
    while stack:
        for segment in stack[-1]:
            if type(segment) is list:
                yield segment
                continue
            cid, layer, lo, hi = segment
            left, entries = _node(fetch, cid)
            if not entries and left is None:
                raise _bad(cid, "is empty")
            stack.append(iter(_expand(cid, left, entries, layer, lo, hi, wanted, check_layers)))
            break
        else:
            stack.pop()


def _root_layer(entries: list[Any]) -> int:
    """The root's layer is its first key's; a malformed first entry fails later, in _expand."""
    first = entries[0]
    key = first.get("k") if isinstance(first, dict) else None
    return key_layer(key) if isinstance(key, bytes) else 0


def _expand(
    cid: bytes,
    left: bytes | None,
    entries: list[Any],
    layer: int,
    lo: bytes | None,
    hi: bytes | None,
    wanted: KeyRanges | None,
    check_layers: bool,
) -> list[tuple[Any, ...]]:
    """A node's contents in key order as segments: a list (a run of ``(key, CID)``
    records) or a tuple (a subtree: ``(cid, layer, lo, hi)``). Every key is checked for
    shape, for order within the node's bounds ``(lo, hi)`` and, with ``check_layers``, for
    its layer.
    """
    out: list[Any] = []
    run: list[tuple[bytes, bytes]] = []
    prev = b""
    prev_key = lo
    subtree = left
    fullmatch = _KEY_RE.fullmatch
    for entry in entries:
        try:
            if len(entry) != 4:
                raise TypeError
            p, k, v, t = entry["p"], entry["k"], entry["v"], entry["t"]
        except (TypeError, KeyError):
            raise _bad(cid, "has an entry that is not a {p, k, v, t} map") from None
        if (
            type(p) is not int
            or type(k) is not bytes
            or type(v) is not bytes
            or not (t is None or type(t) is bytes)
        ):
            raise _bad(cid, "has an entry with mistyped fields")
        if not 0 <= p <= len(prev):
            raise _bad(cid, f"has prefix length {p}, longer than the previous key")
        key = prev[:p] + k
        if fullmatch(key) is None:
            raise _bad(cid, f"has key {key[:80]!r}, not collection/rkey")
        if (prev_key is not None and key <= prev_key) or (hi is not None and key >= hi):
            raise _bad(cid, f"has key {key[:80]!r} out of order")
        if check_layers:
            digest = sha256(key).digest()
            # Three keys in four are on layer 0 (digest[0] >= 0x40): decided without a call.
            on_layer_0 = digest[0] >= 0x40
            if (layer != 0) if on_layer_0 else (_layer_of_digest(digest) != layer):
                raise _bad(cid, f"has key {key[:80]!r} on the wrong layer")
        if subtree is not None:
            run = _add_subtree(out, run, subtree, layer, prev_key, key, wanted, cid)
        if wanted is None or wanted.contains(key):
            run.append((key, v))
        prev = prev_key = key
        subtree = t
    if subtree is not None:
        run = _add_subtree(out, run, subtree, layer, prev_key, hi, wanted, cid)
    if run:
        out.append(run)
    return out


def _add_subtree(
    out: list[Any],
    run: list[tuple[bytes, bytes]],
    cid: bytes,
    layer: int,
    lo: bytes | None,
    hi: bytes | None,
    wanted: KeyRanges | None,
    parent: bytes,
) -> list[tuple[bytes, bytes]]:
    """Close the current run and add the subtree, unless the filter rules it out; return
    the run to continue with."""
    if layer == 0:
        raise _bad(parent, "on layer 0 points to a subtree")
    if wanted is not None and not wanted.overlaps(lo, hi):
        return run
    if run:
        out.append(run)
    out.append((cid, layer - 1, lo, hi))
    return []
