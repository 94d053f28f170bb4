from __future__ import annotations

import cbrrr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.atproto.cid import (
    CID,
    cid_for_dag_cbor,
    cid_to_str,
    parse_cid_bytes,
    read_varint,
)
from bsky_backfill.errors import InvalidSyntax


def test_cid_string_round_trip_matches_cbrrr() -> None:
    raw = cid_for_dag_cbor(b"\xa0")
    text = cid_to_str(raw)
    assert text == cbrrr.CID(raw).encode("base32")
    assert CID.parse(text).raw == raw
    assert CID.parse(text).codec == 0x71


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qmabc",
        "bafy",
        "b" + "a" * 20,
        "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpmaa",
    ],
)
def test_bad_cid_strings_are_invalid_syntax(text: str) -> None:
    with pytest.raises(InvalidSyntax):
        CID.parse(text)


def test_cids_are_immutable_and_hashable() -> None:
    cid = CID(cid_for_dag_cbor(b"x"))
    assert {cid: 1}[CID(cid_for_dag_cbor(b"x"))] == 1
    with pytest.raises(AttributeError):
        cid.raw = b""  # type: ignore[misc]


@given(st.integers(0, 2**63 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = bytearray()
    v = value
    while True:
        low, v = v & 0x7F, v >> 7
        encoded.append(low | (0x80 if v else 0))
        if not v:
            break
    assert read_varint(bytes(encoded) + b"tail", 0) == (value, len(encoded))


def test_overlong_and_non_minimal_varints_are_rejected() -> None:
    with pytest.raises(ValueError, match="longer than 9"):
        read_varint(b"\xff" * 10, 0)
    with pytest.raises(ValueError, match="not minimally"):
        read_varint(b"\x81\x00", 0)
    with pytest.raises(IndexError):
        read_varint(b"\x81", 0)


def test_parse_cid_bytes_rejects_cidv0_and_huge_digests() -> None:
    with pytest.raises(ValueError, match="version"):
        parse_cid_bytes(b"\x12\x20" + bytes(32), 0)
    with pytest.raises(ValueError, match="digest"):
        parse_cid_bytes(b"\x01\x71\x12\x7f" + bytes(200), 0)
