from __future__ import annotations

import json

import cbrrr
import libipld
import pytest

from bsky_backfill.atproto.cbor import MAX_NESTING, decode_block, decode_record, to_json
from bsky_backfill.atproto.cid import CID, cid_for_dag_cbor
from bsky_backfill.errors import MalformedBlock

BLOB = cbrrr.CID.cidv1_raw_sha256_32_from(b"image bytes")


def encoded(value: object) -> tuple[bytes, bytes]:
    data = bytes(cbrrr.encode_dag_cbor(value))
    return data, cid_for_dag_cbor(data)


def test_a_record_with_a_link_decodes_it_as_a_cid() -> None:
    data, cid = encoded({"$type": "x", "ref": BLOB, "raw": b"\x01\x02"})
    value = decode_record(data, cid)
    assert value["ref"] == CID(BLOB.cid_bytes)
    assert value["raw"] == b"\x01\x02"


def test_to_json_writes_links_and_bytes_in_atproto_form() -> None:
    data, cid = encoded({"ref": BLOB, "raw": b"\x01\x02", "text": "héllo"})
    out = json.loads(to_json(decode_record(data, cid)))
    assert out == {
        "raw": {"$bytes": "AQI"},
        "ref": {"$link": BLOB.encode("base32")},
        "text": "héllo",
    }


def test_to_json_matches_cbrrr_atjson_on_generated_records() -> None:
    from tests.support.repos import make_records

    for value in make_records(300, seed=3).values():
        data, cid = encoded(value)
        ours = json.loads(to_json(decode_record(data, cid)))
        assert ours == cbrrr.decode_dag_cbor(data, atjson_mode=True)


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": BLOB}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    "value",
    [{"big": 2**64 - 1, "low": -(2**64)}, nested(400)],
    ids=["integers-beyond-64-bits", "nested-400-deep"],
)
def test_to_json_writes_what_the_fast_encoder_refuses(value: dict[str, object]) -> None:
    data, cid = encoded(value)
    text = to_json(decode_record(data, cid))
    assert json.loads(text) == cbrrr.decode_dag_cbor(data, atjson_mode=True)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\x01\x02", b"\xa2\x61b\x01\x61a\x02", b"\x81" * (MAX_NESTING + 5) + b"\x01"],
    ids=["empty", "break", "two-values", "unsorted-map", "too-deep"],
)
def test_invalid_dag_cbor_is_a_malformed_block(data: bytes) -> None:
    with pytest.raises(MalformedBlock, match="not valid DAG-CBOR"):
        decode_record(data, cid_for_dag_cbor(data))


def test_a_record_that_is_not_a_map_is_malformed() -> None:
    data, cid = encoded([1, 2])
    with pytest.raises(MalformedBlock, match="not a map"):
        decode_record(data, cid)


def test_decode_block_keeps_links_as_raw_cid_bytes() -> None:
    data, cid = encoded({"l": BLOB})
    assert decode_block(data, cid) == {"l": BLOB.cid_bytes}
    assert libipld.decode_dag_cbor(data) == decode_block(data, cid)
