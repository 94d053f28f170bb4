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

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from bsky_backfill.atproto.cbor import decode_block
from bsky_backfill.atproto.cid import cid_to_str
from bsky_backfill.errors import MalformedMst

__all__ = ["KeyRanges", "key_layer", "walk_mst"]

# collection/rkey: an NSID-shaped collection and a record key, both ASCII.
_KEY_RE: Final = re.compile(rb"[a-zA-Z][a-zA-Z0-9.-]{0,316}/[a-zA-Z0-9._:~-]{1,512}")
_MAX_LAYER: Final = 128  # sha256 has 256 bits; two per layer

Fetch = Callable[[bytes], bytes]
"""Given a binary CID, return the block's bytes (hash-checked as the caller decides)."""


def key_layer(key: bytes) -> int:
    """The MST layer of ``key``: leading zero bits of its sha256, divided by two."""
    digest = int.from_bytes(hashlib.sha256(key).digest(), "big")
    return (256 - digest.bit_length()) // 2


class KeyRanges:
    """The key ranges of a set of collections: ``[c + "/", c + "0")`` for each ``c``."""

    __slots__ = ("_ranges",)

    def __init__(self, collections: Iterable[str]) -> None:
        # "0" is the byte after "/", so [c/, c0) holds exactly the keys of collection c.
        self._ranges = sorted({(c.encode() + b"/", c.encode() + b"0") for c in collections})

    def contains(self, key: bytes) -> bool:
        return any(lo <= key < hi for lo, hi in self._ranges)

    def overlaps(self, lo: bytes | None, hi: bytes | None) -> bool:
        """Whether any wanted key can lie strictly between ``lo`` and ``hi`` (None: open)."""
        return any(
            (hi is None or start < hi) and (lo is None or stop > lo) for start, stop in self._ranges
        )


def _node(fetch: Fetch, cid: bytes) -> tuple[bytes | None, list[Any]]:
    name = cid_to_str(cid)
    node = decode_block(fetch(cid), name)
    if not isinstance(node, dict) or set(node) != {"l", "e"}:
        raise MalformedMst(f"MST node {name} is not a {{l, e}} map")
    left, entries = node["l"], node["e"]
    if not (left is None or isinstance(left, bytes)) or not isinstance(entries, list):
        raise MalformedMst(f"MST node {name} has a bad 'l' or 'e' field")
    return left, entries


def _keys(entries: list[Any], name: str) -> list[tuple[bytes, bytes, bytes | None]]:
    """Expand prefix-compressed entries into ``(key, value CID, right subtree CID)``."""
    out = []
    prev = b""
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"p", "k", "v", "t"}:
            raise MalformedMst(f"MST node {name} has an entry that is not a {{p, k, v, t}} map")
        p, k, v, t = entry["p"], entry["k"], entry["v"], entry["t"]
        if (
            not isinstance(p, int)
            or not isinstance(k, bytes)
            or not isinstance(v, bytes)
            or not (t is None or isinstance(t, bytes))
        ):
            raise MalformedMst(f"MST node {name} has an entry with mistyped fields")
        if not 0 <= p <= len(prev):
            raise MalformedMst(f"MST node {name}: prefix length {p} exceeds the previous key")
        key = prev[:p] + k
        if not _KEY_RE.fullmatch(key):
            raise MalformedMst(f"MST node {name}: key {key[:80]!r} is not collection/rkey")
        out.append((key, v, t))
        prev = key
    return out


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
    left, entries = _node(fetch, root)
    if not entries:
        if left is not None:
            raise MalformedMst("the MST root is an empty node pointing to a subtree")
        return
    first = _keys(entries, cid_to_str(root))[0][0]
    root_layer = key_layer(first) if check_layers else _MAX_LAYER
    # A stack of pending work, popped in key order: a subtree is (cid, layer, lo, hi),
    # a record is (key, cid).
    stack: list[tuple[Any, ...]] = [(root, root_layer, None, None)]
    is_root = True
    while stack:
        item = stack.pop()
        if len(item) == 2:
            yield item[0], item[1]
            continue
        cid, layer, lo, hi = item
        name = cid_to_str(cid)
        if is_root:
            is_root = False
        else:
            left, entries = _node(fetch, cid)
            if not entries and left is None:
                raise MalformedMst(f"MST node {name} is empty")
        keyed = _keys(entries, name)
        pending: list[tuple[Any, ...]] = []
        prev_key = lo
        subtree = left
        for key, value, right in keyed:
            if (prev_key is not None and key <= prev_key) or (hi is not None and key >= hi):
                raise MalformedMst(f"MST node {name}: key {key[:80]!r} is out of order")
            if check_layers and key_layer(key) != layer:
                raise MalformedMst(f"MST node {name}: key {key[:80]!r} is on the wrong layer")
            _push_subtree(pending, subtree, layer, prev_key, key, wanted, name)
            if wanted is None or wanted.contains(key):
                pending.append((key, value))
            prev_key = key
            subtree = right
        _push_subtree(pending, subtree, layer, prev_key, hi, wanted, name)
        stack.extend(reversed(pending))


def _push_subtree(
    pending: list[tuple[Any, ...]],
    cid: bytes | None,
    layer: int,
    lo: bytes | None,
    hi: bytes | None,
    wanted: KeyRanges | None,
    parent: str,
) -> None:
    if cid is None:
        return
    if layer == 0:
        raise MalformedMst(f"MST node {parent} on layer 0 points to a subtree")
    if wanted is None or wanted.overlaps(lo, hi):
        pending.append((cid, layer - 1, lo, hi))
