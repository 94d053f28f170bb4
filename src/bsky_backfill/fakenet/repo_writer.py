"""Build signed repo exports (CAR v1) from records: the simulated network's repo writer.

Independent of the reader (``atproto.mst``): it builds the MST bottom-up from sorted keys
by the spec's rule (a key's layer = leading zero bits of sha256(key) // 2; children one
layer down), encodes with cbrrr, and signs the commit with a caller-given function.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cbrrr

__all__ = ["BlockOrder", "RepoExport", "build_repo", "encode_car", "layer_of"]

BlockOrder = Literal["newest_first", "tree", "shuffled"]
Signer = Callable[[bytes], bytes]


def layer_of(key: bytes) -> int:
    """Leading zero bits of sha256(key), two per layer (fanout 4)."""
    zeros = 0
    for byte in hashlib.sha256(key).digest():
        if byte == 0:
            zeros += 8
            continue
        zeros += 8 - byte.bit_length()
        break
    return zeros // 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


@dataclass
class RepoExport:
    """A built repo: its CAR bytes and what went into it."""

    did: str
    rev: str
    commit_cid: cbrrr.CID
    data_cid: cbrrr.CID
    blocks: dict[bytes, bytes] = field(repr=False)
    record_cids: dict[str, cbrrr.CID] = field(repr=False)
    car: bytes = field(repr=False)


class _TreeBuilder:
    """Writes MST nodes into ``blocks`` and returns their CIDs."""

    def __init__(self, blocks: dict[bytes, bytes], order: list[bytes]) -> None:
        self.blocks = blocks
        self.order = order

    def put(self, value: Any) -> cbrrr.CID:
        data = bytes(cbrrr.encode_dag_cbor(value))
        cid = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(data)
        if cid.cid_bytes not in self.blocks:
            self.blocks[cid.cid_bytes] = data
            self.order.append(cid.cid_bytes)
        return cid

    def node(self, items: list[tuple[bytes, cbrrr.CID, int]], layer: int) -> cbrrr.CID:
        """The node on ``layer`` holding ``items`` (all with layer <= ``layer``)."""
        left: cbrrr.CID | None = None
        entries: list[dict[str, Any]] = []
        group: list[tuple[bytes, cbrrr.CID, int]] = []
        prev = b""
        for item in items:
            key, cid, key_layer = item
            if key_layer < layer:
                group.append(item)
                continue
            sub = self.node(group, layer - 1) if group else None
            if entries:
                entries[-1]["t"] = sub
            else:
                left = sub
            group = []
            p = _common_prefix(prev, key)
            entries.append({"k": key[p:], "p": p, "t": None, "v": cid})
            prev = key
        sub = self.node(group, layer - 1) if group else None
        if entries:
            entries[-1]["t"] = sub
        else:
            left = sub
        return self.put({"e": entries, "l": left})


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def build_repo(
    did: str,
    records: Mapping[str, Mapping[str, Any]],
    *,
    rev: str,
    sign: Signer,
    order: BlockOrder = "newest_first",
    seed: int = 0,
    extra_blocks: Iterable[bytes] = (),
    duplicate_every: int = 0,
) -> RepoExport:
    """Build the repo of ``did`` holding ``records`` (``"collection/rkey" -> value``).

    Values are encoded as given (links must be ``cbrrr.CID``). ``order`` sets the CAR's
    block order: ``newest_first`` (records in reverse key order, then the tree, roughly
    like a PDS), ``tree`` (commit, nodes, records), or ``shuffled`` (by ``seed``).
    ``extra_blocks`` are added unreferenced; ``duplicate_every`` repeats every n-th block.
    """
    blocks: dict[bytes, bytes] = {}
    record_order: list[bytes] = []
    record_cids: dict[str, cbrrr.CID] = {}
    writer = _TreeBuilder(blocks, record_order)
    for key in sorted(records):
        record_cids[key] = writer.put(dict(records[key]))
    node_order: list[bytes] = []
    writer.order = node_order
    items = [(k.encode(), record_cids[k], layer_of(k.encode())) for k in sorted(records)]
    root_layer = max((layer for _, _, layer in items), default=0)
    data_cid = writer.node(items, root_layer)
    unsigned: dict[str, Any] = {
        "did": did,
        "version": 3,
        "data": data_cid,
        "rev": rev,
        "prev": None,
    }
    commit = dict(unsigned, sig=sign(bytes(cbrrr.encode_dag_cbor(unsigned))))
    commit_order: list[bytes] = []
    writer.order = commit_order
    commit_cid = writer.put(commit)
    for extra in extra_blocks:
        writer.put({"unreferenced": extra})
    sequence = _block_sequence(order, commit_order, node_order, record_order, seed)
    if duplicate_every:
        sequence = [
            c for i, c in enumerate(sequence) for _ in range(2 if i % duplicate_every == 0 else 1)
        ]
    car = encode_car([commit_cid], ((cid, blocks[cid]) for cid in sequence))
    return RepoExport(did, rev, commit_cid, data_cid, blocks, record_cids, car)


def _block_sequence(
    order: BlockOrder,
    commit: list[bytes],
    nodes: list[bytes],
    records: list[bytes],
    seed: int,
) -> list[bytes]:
    if order == "tree":
        return commit + nodes[::-1] + records
    if order == "newest_first":
        return commit[:1] + records[::-1] + nodes + commit[1:]
    shuffled = commit + nodes + records
    random.Random(seed).shuffle(shuffled)
    return shuffled


def encode_car(roots: list[cbrrr.CID], blocks: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A CAR v1 with ``roots`` and the given ``(binary CID, data)`` frames, in order."""
    header_fields: dict[str, Any] = {"roots": roots, "version": 1}
    header = bytes(cbrrr.encode_dag_cbor(header_fields))
    out = [_varint(len(header)), header]
    for cid, data in blocks:
        out.append(_varint(len(cid) + len(data)))
        out.append(cid)
        out.append(data)
    return b"".join(out)
