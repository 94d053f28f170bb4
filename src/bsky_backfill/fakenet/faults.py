"""Faults the simulated hosts inject: what goes wrong, for which request, and how.

A :class:`FaultSpec` gives each fault a rate (a share of requests) and/or a schedule
(explicit request numbers per host); :class:`FaultPlan` decides deterministically from
``(seed, host, request number)`` which fault, if any, hits a request. The CAR faults are
pure functions on repo bytes, so tests can apply them without a server.

Faults and what a correct client should conclude:
- ``error_5xx``: 500/502/503 — retry with backoff;
- ``reset``: the connection is dropped before any answer — retry;
- ``stall``: the answer never comes (``stall_seconds``) — time out, retry;
- ``truncate``: a CAR cut on a block boundary — the reader's ``TruncatedRepo``, retry;
- ``corrupt``: one flipped byte in the MST root node — ``CorruptBlock``, permanent;
- ``bad_signature``: the commit re-signed with a key that is not the account's —
  ``BadSignature``, permanent.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import cbrrr

from bsky_backfill.atproto.cid import parse_cid_bytes, read_varint
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.fakenet.repo_writer import RepoExport, encode_car

__all__ = [
    "CAR_FAULTS",
    "Fault",
    "FaultPlan",
    "FaultSpec",
    "bad_signature",
    "corrupt_record",
    "corrupt_tree_root",
    "truncate_at_block",
]

Fault = Literal["error_5xx", "reset", "stall", "truncate", "corrupt", "bad_signature"]
CAR_FAULTS: Final = frozenset({"truncate", "corrupt", "bad_signature"})
_ORDER: Final[tuple[Fault, ...]] = (
    "error_5xx",
    "reset",
    "stall",
    "truncate",
    "corrupt",
    "bad_signature",
)


@dataclass(frozen=True)
class FaultSpec:
    """Fault rates (0..1, of requests; CAR faults only hit getRepo) and schedules
    (host -> request numbers, counted from 1 per host, that get that fault).

    ``error_5xx_status`` cycles through these codes; ``stall_seconds`` is how long a
    stalled request hangs before the host gives up on it.
    """

    seed: int = 0
    rates: Mapping[Fault, float] = field(default_factory=dict)
    schedule: Mapping[int, Mapping[int, Fault]] = field(default_factory=dict)
    error_5xx_status: tuple[int, ...] = (500, 502, 503)
    stall_seconds: float = 30.0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(_ORDER)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(_ORDER)}")
        if any(not 0 <= rate <= 1 for rate in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError("fault rates must be within 0..1 and sum to at most 1")


class FaultPlan:
    """Decides each request's fault; deterministic for a spec, host and request number."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec

    def decide(self, host: int, request_no: int, *, is_get_repo: bool) -> Fault | None:
        scheduled = self.spec.schedule.get(host, {}).get(request_no)
        if scheduled is not None:
            return scheduled if is_get_repo or scheduled not in CAR_FAULTS else None
        roll = _uniform(self.spec.seed, host, request_no)
        for fault in _ORDER:
            rate = self.spec.rates.get(fault, 0.0)
            if roll < rate:
                return fault if is_get_repo or fault not in CAR_FAULTS else None
            roll -= rate
        return None

    def status_for(self, host: int, request_no: int) -> int:
        codes = self.spec.error_5xx_status
        return codes[(host + request_no) % len(codes)]


def _uniform(seed: int, host: int, request_no: int) -> float:
    digest = hashlib.sha256(f"fault-{seed}-{host}-{request_no}".encode()).digest()
    return int.from_bytes(digest[:7], "big") / 2**56


def _frames(car: bytes) -> list[tuple[int, int, int, bytes]]:
    """``(frame start, data start, end, cid)`` of each block frame after the header."""
    out = []
    length, pos = read_varint(car, 0)
    pos += length
    while pos < len(car):
        start = pos
        length, pos = read_varint(car, pos)
        cid_end = parse_cid_bytes(car, pos)
        out.append((start, cid_end, pos + length, car[pos:cid_end]))
        pos += length
    return out


def _root(car: bytes) -> bytes:
    length, pos = read_varint(car, 0)
    header: dict[str, Any] = cbrrr.decode_dag_cbor(car[pos : pos + length])  # type: ignore[assignment]
    return bytes(header["roots"][0].cid_bytes)


def _data(car: bytes, cid: bytes) -> tuple[int, int]:
    """``(start, end)`` of the data of block ``cid`` in ``car`` (KeyError if absent)."""
    for _, start, end, frame_cid in _frames(car):
        if frame_cid == cid:
            return start, end
    raise KeyError(cid)


def _commit(car: bytes) -> dict[str, Any]:
    start, end = _data(car, _root(car))
    return cbrrr.decode_dag_cbor(car[start:end])  # type: ignore[return-value]


def _flip(car: bytes, span: tuple[int, int], rng: random.Random) -> bytes:
    at = rng.randrange(*span)
    return car[:at] + bytes([car[at] ^ 0x20]) + car[at + 1 :]


def truncate_at_block(car: bytes, fraction: float = 0.5) -> bytes:
    """The CAR cut on the block boundary nearest ``fraction`` of its frames (never the
    header, never the whole): every remaining frame parses, some blocks are missing."""
    frames = _frames(car)
    if len(frames) < 2:
        return car[: frames[0][0]] if frames else car
    keep = min(max(int(len(frames) * fraction), 1), len(frames) - 1)
    return car[: frames[keep - 1][2]]


def corrupt_record(export: RepoExport, rng: random.Random) -> bytes:
    """The CAR with one byte flipped inside one record block (its CID no longer matches)."""
    cid = rng.choice(sorted(c.cid_bytes for c in export.record_cids.values()))
    return _flip(export.car, _data(export.car, cid), rng)


def corrupt_tree_root(car: bytes, rng: random.Random) -> bytes:
    """The CAR with one byte flipped in its MST root node: every read meets the bad block,
    whatever its collection filter."""
    return _flip(car, _data(car, bytes(_commit(car)["data"].cid_bytes)), rng)


def bad_signature(car: bytes, impostor: Keypair) -> bytes:
    """The CAR with its commit re-signed by ``impostor``: hashes and tree stay valid."""
    root = _root(car)
    unsigned = {k: v for k, v in _commit(car).items() if k != "sig"}
    forged = dict(unsigned, sig=impostor.sign(bytes(cbrrr.encode_dag_cbor(unsigned))))
    data = bytes(cbrrr.encode_dag_cbor(forged))
    cid = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(data)
    others = [(c, car[start:end]) for _, start, end, c in _frames(car) if c != root]
    return encode_car([cid], [(cid.cid_bytes, data), *others])
