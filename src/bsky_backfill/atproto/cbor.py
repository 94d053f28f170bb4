"""DAG-CBOR decoding for repo blocks, and the atproto JSON form of decoded values.

Two decoders, each where it is best (measured: ``benchmarks/``):
- libipld is ~2x faster and caps nesting at 1000 levels, but returns CID links as the
  same ``bytes`` type as byte strings;
- cbrrr keeps links distinct (our :class:`CID`), so it decodes the few records that
  contain a link (tag 42: blob refs in image posts, avatars) and the commit, whose
  signature covers a re-encoding that must write links back as links.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import cbrrr
import libipld
import orjson

from bsky_backfill.atproto.cid import CID, cid_to_str
from bsky_backfill.errors import MalformedBlock

__all__ = [
    "MAX_NESTING",
    "decode_block",
    "decode_commit_block",
    "decode_record",
    "encode_dag_cbor",
    "to_json",
]

MAX_NESTING: Final = 1000  # libipld's recursion limit; lexicon records nest < 20 deep
_TAG_42: Final = b"\xd8\x2a"  # CBOR tag 42 (a CID link) as it appears in encoded bytes
_DECODE_ERRORS: Final = (
    ValueError,
    RecursionError,
    TypeError,
    OverflowError,
    cbrrr.CbrrrDecodeError,
)
_libipld_decode: Final = libipld.decode_dag_cbor


def _malformed(cid: bytes, exc: BaseException) -> MalformedBlock:
    reason = "nests too deep" if isinstance(exc, RecursionError) else str(exc)
    return MalformedBlock(f"block {cid_to_str(cid)} is not valid DAG-CBOR: {reason}")


def decode_block(data: bytes, cid: bytes) -> Any:
    """Decode a DAG-CBOR block with links as raw CID ``bytes`` (MST nodes, headers).

    Raises ``MalformedBlock`` for anything that is not a single valid DAG-CBOR value.
    """
    try:
        return _libipld_decode(data)
    except _DECODE_ERRORS as exc:
        raise _malformed(cid, exc) from None


def decode_record(data: bytes, cid: bytes) -> dict[str, Any]:
    """Decode a record block into a dict; links become :class:`CID`, bytes stay ``bytes``.

    Raises ``MalformedBlock`` when the block is not valid DAG-CBOR or not a map.
    """
    try:
        value = _libipld_decode(data)  # validates and caps nesting, for both paths
        if _TAG_42 in data:
            value = cbrrr.decode_dag_cbor(data, cid_ctor=CID)
    except _DECODE_ERRORS as exc:
        raise _malformed(cid, exc) from None
    if type(value) is not dict:
        raise MalformedBlock(
            f"record block {cid_to_str(cid)} is a {type(value).__name__}, not a map"
        )
    return value


def decode_commit_block(data: bytes, cid: bytes) -> dict[str, Any]:
    """Decode a commit block keeping links as ``cbrrr.CID`` so it can be re-encoded exactly."""
    decode_block(data, cid)
    try:
        value = cbrrr.decode_dag_cbor(data)
    except _DECODE_ERRORS as exc:
        raise _malformed(cid, exc) from None
    if not isinstance(value, dict):
        raise MalformedBlock(
            f"commit block {cid_to_str(cid)} is a {type(value).__name__}, not a map"
        )
    return value


def encode_dag_cbor(value: Any) -> bytes:
    """Canonical DAG-CBOR of ``value``; links must be ``cbrrr.CID`` objects."""
    return bytes(cbrrr.encode_dag_cbor(value))


def _json_default(value: object) -> object:
    if isinstance(value, CID):
        return {"$link": str(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    raise TypeError(f"{type(value).__name__} is not part of the atproto data model")


_ENCODER: Final = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))


def to_json(value: Any) -> str:
    """The atproto JSON form of a decoded value: links as ``{"$link"}``, bytes as ``{"$bytes"}``.

    Compact, keys in the record's own order, non-ASCII kept as is. orjson writes a record
    in a fifth of the time; what it refuses (nesting over 254 levels, integers beyond 64
    bits) goes through the standard library's encoder, which allows more.
    """
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(value)
