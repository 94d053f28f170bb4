"""The C reader (``_fastrepo.c``) gives exactly what the Python reader gives.

It reads a strict subset itself and hands everything else to Python: these tests check
both halves of that promise — equal results on real-shaped repos and on arbitrary
records, the subset taken natively, and every input outside it handed over.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from datetime import UTC, datetime
from typing import Any, NamedTuple

import cbrrr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsky_backfill.atproto.car import MemoryCar
from bsky_backfill.atproto.cbor import decode_record, to_json
from bsky_backfill.atproto.cid import cid_for_dag_cbor, cid_to_str, read_varint
from bsky_backfill.atproto.repo import RecordParts, read_repo
from bsky_backfill.atproto.syntax import micros_to_tid, parse_datetime
from bsky_backfill.fakenet.repo_writer import build_repo, encode_car
from tests.support.native import comparable, compiled, parts_both_ways
from tests.support.repos import DID, KEY, make_repo

SOME = ["app.bsky.feed.like", "app.bsky.graph.follow", "app.bsky.actor.profile"]
KEY_OF = KEY.did_key
TID = micros_to_tid(1_700_000_000_000_000)


@pytest.mark.parametrize("verify", ["full", "hashes", "none"])
@pytest.mark.parametrize("collections", [None, SOME, ["app.bsky.feed.post"], ["no.such.thing"]])
def test_simulated_repos_read_the_same_and_wholly_in_c(verify: str, collections: Any) -> None:
    for seed, options in enumerate(
        [{}, {"order": "tree"}, {"order": "shuffled"}, {"duplicate_every": 7}]
    ):
        car = make_repo(400, seed=seed, **options).car
        parts = parts_both_ways(
            car, all_native=True, signing_key=KEY_OF, verify=verify, collections=collections
        )
        if collections is None:
            assert len(parts) == 400


def test_the_c_block_table_finds_what_the_python_index_finds() -> None:
    compiled()
    car = make_repo(300, duplicate_every=5, extra_blocks=[b"\xa0", b"\x80"]).car
    fast, slow = MemoryCar(car), MemoryCar(car, native=False)
    assert fast.table is not None
    assert slow.table is None
    cids = {bytes(car[at : at + 36]) for at in frame_cids(car)}
    assert {cid: fast.get(cid) for cid in cids} == {cid: slow.get(cid) for cid in cids}
    absent = cid_for_dag_cbor(b"\xa1")
    assert absent not in fast
    assert absent not in slow
    assert b"short" not in fast
    assert (fast.duplicates, len(fast), fast.roots) == (slow.duplicates, len(slow), slow.roots)


def frame_cids(car: bytes) -> list[int]:
    """Where each frame's CID starts."""
    length, pos = read_varint(car, 0)
    pos += length
    starts = []
    while pos < len(car):
        length, pos = read_varint(car, pos)
        starts.append(pos)
        pos += length
    return starts


def test_cids_crowding_one_neighbourhood_of_the_table_are_left_to_the_python_index() -> None:
    native = compiled()
    # Forged CIDs sharing their first digest bytes all want the same slot.
    blocks = [(bytes(36 - 4) + i.to_bytes(4, "big"), b"\xa0") for i in range(100)]
    car = car_of([(bytes.fromhex("01711220") + cid[4:], data) for cid, data in blocks])
    length, pos = read_varint(car, 0)
    assert native.scan(car, pos + length, 1024) is None
    store = MemoryCar(car)
    assert store.table is None
    assert len(store) == 100


def test_an_empty_repo_has_no_records_either_way() -> None:
    car = build_repo(DID, {}, rev=TID, sign=KEY.sign).car
    assert parts_both_ways(car, all_native=True, signing_key=KEY_OF) == []


# --- records block by block ---------------------------------------------------------------


def convert(block: bytes, *, index_cid: bytes | None = None) -> RecordParts:
    """The C reader's parts for one record block (``index_cid``: the CID it is filed
    under, when not its own hash)."""
    native = compiled()
    cid = cid_for_dag_cbor(block)
    store = MemoryCar(car_of([(index_cid or cid, block)]))
    assert store.table is not None
    records = len(KEY_BYTES).to_bytes(2, sys.byteorder) + KEY_BYTES + cid
    rows, end = native.rows(RecordParts, store.data, store.table, DID, records, 0, 1, True)
    assert len(rows) == 1
    assert end == len(records)
    return rows[0]


KEY_BYTES = f"app.bsky.feed.post/{TID}".encode()


def car_of(blocks: list[tuple[bytes, bytes]]) -> bytes:
    """A CAR of ``(binary CID, data)`` frames, rooted at the first."""
    return encode_car([cbrrr.CID(blocks[0][0])], blocks)


def test_a_record_converts_to_the_same_json_and_fields() -> None:
    link = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(b"x")
    blob = cbrrr.CID.cidv1_raw_sha256_32_from(b"y")
    value = {
        "$type": "app.bsky.feed.post",
        "text": 'quote " back \\ nl \n tab \t bell \x07 del \x7f é 😀 \u2028',
        "createdAt": "2024-05-06T07:08:09.123Z",
        "reply": {"parent": {"uri": "at://p", "cid": "c"}, "root": {"uri": "at://r"}},
        "subject": {"uri": "at://s"},
        "numbers": [0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**63 - 1, -1, -25, -(2**63)],
        "flags": [True, False, None],
        "bytes": [b"", b"a", b"ab", b"abc", bytes(range(256))],
        "links": [link, blob],
        "nested": {"a": [{"b": [[]]}], "": {}},
    }
    block = bytes(cbrrr.encode_dag_cbor(value))
    parts = convert(block)
    expected = decode_record(block, cid_for_dag_cbor(block))
    assert parts.json == to_json(expected)
    assert (parts.created_at, parts.text) == (value["createdAt"], value["text"])
    assert (parts.reply_parent_uri, parts.reply_root_uri) == ("at://p", "at://r")
    assert (parts.subject_uri, parts.subject_did) == ("at://s", None)
    assert parts.uri == f"at://{DID}/app.bsky.feed.post/{TID}"
    assert parts.cid == cid_to_str(cid_for_dag_cbor(block))


def test_a_string_subject_is_the_subject_did() -> None:
    parts = convert(bytes(cbrrr.encode_dag_cbor({"subject": "did:plc:x", "text": 5})))
    assert (parts.subject_did, parts.subject_uri, parts.text) == ("did:plc:x", None, None)


@pytest.mark.parametrize(
    ("why", "block"),
    [
        ("a float", bytes(cbrrr.encode_dag_cbor({"a": 1.5}))),
        ("an integer past int64", bytes(cbrrr.encode_dag_cbor({"a": 2**63}))),
        ("a negative integer past int64", bytes(cbrrr.encode_dag_cbor({"a": -(2**63) - 1}))),
        ("keys out of canonical order", bytes.fromhex("a2616201616102")),
        ("a repeated key", bytes.fromhex("a2616101616102")),
        ("an indefinite-length map", bytes.fromhex("bf616101ff")),
        ("a non-minimal integer", bytes.fromhex("a161611801")),
        ("invalid UTF-8", bytes.fromhex("a1616162fffe")),
        ("a surrogate in UTF-8", bytes.fromhex("a1616163eda080")),
        ("a tag other than 42", bytes.fromhex("a16161c101")),
        ("trailing bytes", bytes.fromhex("a161610100")),
        ("a list, not a map", bytes.fromhex("8101")),
        ("a truncated string", bytes.fromhex("a161616561")),
        ("a non-string key", bytes.fromhex("a10101")),
        ("a createdAt that is not a string", bytes(cbrrr.encode_dag_cbor({"createdAt": 5}))),
        ("deep nesting", bytes.fromhex("a16161" + "81" * 300 + "01")),
        ("a link that is not a CIDv1 sha2-256", bytes.fromhex("a16161d82a43000102")),
    ],
)
def test_what_the_c_reader_does_not_take_goes_to_python(why: str, block: bytes) -> None:
    assert convert(block).json is None, why


def test_a_block_that_fails_its_hash_or_is_missing_goes_to_python() -> None:
    block = bytes(cbrrr.encode_dag_cbor({"text": "hi"}))
    assert convert(block, index_cid=cid_for_dag_cbor(b"other")).json is None
    assert convert(block).json is not None


# --- arbitrary records and damaged CARs ------------------------------------------------------

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    st.binary(max_size=20),
    st.binary(min_size=1, max_size=8).map(cbrrr.CID.cidv1_dag_cbor_sha256_32_from),
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_records = st.fixed_dictionaries(
    {},
    optional={
        "createdAt": st.sampled_from(["2024-01-02T03:04:05Z", "2024-13-01T00:00:00Z", "x"])
        | _leaves,
        "text": _values,
        "subject": _values | st.fixed_dictionaries({"uri": _values}),
        "reply": st.fixed_dictionaries(
            {}, optional={"parent": st.fixed_dictionaries({"uri": _values}), "root": _values}
        ),
        "other": _values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_records, min_size=1, max_size=6))
def test_arbitrary_records_read_the_same_either_way(records: list[dict[str, Any]]) -> None:
    collections = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"]
    keyed = {
        f"{collections[i % 3]}/{micros_to_tid(1_700_000_000_000_000 + i)}": value
        for i, value in enumerate(records)
    }
    car = build_repo(DID, keyed, rev=TID, sign=KEY.sign).car
    compiled()
    fast = outcome(car, native=True)
    assert fast == outcome(car, native=False)
    assert isinstance(fast, tuple) or len(fast) == len(records)  # an error, or every record


def outcome(car: bytes, native: bool, verify: str = "full") -> list[RecordParts] | tuple[str, str]:
    """The records, or the error's type and words."""
    try:
        with read_repo(car, signing_key=KEY_OF, native=native, verify=verify) as repo:
            return comparable(list(repo.record_parts()))
    except Exception as exc:  # the comparison is the point: same type, same words
        return (type(exc).__name__, str(exc))


_DAMAGED_FROM = make_repo(40, seed=9).car


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, len(_DAMAGED_FROM) - 1),
    st.integers(1, 255),
    st.sampled_from(["full", "none"]),  # none: damaged records are decoded, not rejected
)
def test_a_damaged_car_gives_the_same_records_or_error_either_way(
    at: int, xor: int, verify: str
) -> None:
    compiled()
    car = bytearray(_DAMAGED_FROM)
    car[at] ^= xor
    assert outcome(bytes(car), True, verify) == outcome(bytes(car), False, verify)


@pytest.mark.parametrize(
    ("created", "parsed"),
    [
        ("2024-01-02T03:04:05Z", True),
        ("2024-01-02T03:04:05.1Z", True),
        ("2024-01-02T03:04:05.123Z", True),
        ("2024-01-02T03:04:05.123456Z", True),
        ("2024-01-02T03:04:05.123456789Z", True),  # truncated to microseconds
        ("2024-02-29T23:59:59Z", True),
        ("0001-01-01T00:00:00Z", True),
        ("9999-12-31T23:59:59.999999Z", True),
        ("2023-02-29T00:00:00Z", False),  # not a leap year
        ("1900-02-29T00:00:00Z", False),
        ("0000-01-01T00:00:00Z", False),  # year 0000: the Python parser's to judge
        ("2024-01-02T24:00:00Z", False),
        ("2024-01-02T03:60:00Z", False),
        ("2024-01-02T03:04:60Z", False),  # no leap seconds
        ("2024-13-02T03:04:05Z", False),
        ("2024-01-00T03:04:05Z", False),
        ("2024-01-02T03:04:05+01:00", False),  # valid, but not the common form
        ("2024-01-02T03:04:05.Z", False),
        ("2024-01-02t03:04:05Z", False),
        ("2024-01-02T03:04:05z", False),
        ("2024-01-02T03:04:05." + "1" * 44 + "Z", False),  # 65 characters
        ("２０２４-01-02T03:04:05Z", False),
    ],
)
def test_created_at_in_the_common_form_is_parsed_in_c_exactly(created: str, parsed: bool) -> None:
    parts = convert(bytes(cbrrr.encode_dag_cbor({"createdAt": created})))
    assert parts.created_at == created
    assert (parts.created_moment is not None) == parsed
    if parsed:
        assert parts.created_moment == parse_datetime(created)
        assert parts.created_moment.tzinfo is UTC


def test_an_mst_node_claiming_more_entries_than_fit_is_left_to_python() -> None:
    native = compiled()
    node = bytes.fromhex("a261659a001fffff616cf6")  # e: an array of 2M entries, then l: null
    cid = cid_for_dag_cbor(node)
    store = MemoryCar(car_of([(cid, node)]))
    assert store.table is not None
    assert native.walk(store.data, store.table, cid, True, True, None) is None


def test_escapes_convert_exactly_wherever_the_output_buffer_ends() -> None:
    # The output buffer is reused across records: escapes met right at its end once
    # wrote a byte past it (found with AddressSanitizer).
    for pad in range(0, 700, 7):
        value = {"a": "x" * pad, "b": '""a\n\x01é"'}
        block = bytes(cbrrr.encode_dag_cbor(value))
        assert convert(block).json == to_json(value)


def test_overlapping_collection_ranges_and_bad_scan_arguments_are_left_to_python() -> None:
    native = compiled()
    car = make_repo(30).car
    store = MemoryCar(car)
    with read_repo(car, signing_key=KEY_OF) as repo:
        root = repo.commit.data_cid
    overlapping = [(b"app.bsky/", b"app.bsky0"), (b"app.bsky/x/", b"app.bsky/x0")]
    assert store.table is not None
    assert native.walk(store.data, store.table, root, True, True, overlapping) is None
    assert native.scan(car, -1, 1024) is None
    assert native.scan(car, 0, -1) is None


def test_a_tree_deeper_than_the_c_walk_goes_is_left_to_python() -> None:
    native = compiled()
    blocks: list[tuple[bytes, bytes]] = []

    def put(value: dict[str, Any]) -> cbrrr.CID:
        data = bytes(cbrrr.encode_dag_cbor(value))
        blocks.append((cid_for_dag_cbor(data), data))
        return cbrrr.CID(blocks[-1][0])

    record = put({"$type": "app.bsky.feed.like", "createdAt": "2024-01-01T00:00:00Z"})
    node = None
    for depth in range(40):  # a chain of nodes, each the left child of the next
        key = f"app.bsky.feed.like/k{depth:04d}".encode()
        node = put({"e": [{"k": key, "p": 0, "t": None, "v": record}], "l": node})
    assert node is not None
    unsigned = {"did": DID, "version": 3, "data": node, "rev": TID, "prev": None}
    commit = put(dict(unsigned, sig=KEY.sign(bytes(cbrrr.encode_dag_cbor(unsigned)))))
    car = encode_car([commit], blocks[::-1])
    store = MemoryCar(car)
    assert store.table is not None
    assert native.walk(car, store.table, bytes(node), True, False, None) is None
    assert len(parts_both_ways(car, all_native=False, verify="hashes")) == 40


def test_records_of_collections_alike_in_length_get_each_their_own_name() -> None:
    native = compiled()
    block = bytes(cbrrr.encode_dag_cbor({"text": "x"}))
    cid = cid_for_dag_cbor(block)
    store = MemoryCar(car_of([(cid, block)]))
    assert store.table is not None
    keys = ["Ã©/x".encode(), "é/x".encode()]  # one str length apart, not in bytes
    records = b"".join(len(k).to_bytes(2, sys.byteorder) + k + cid for k in keys)
    rows, _ = native.rows(RecordParts, store.data, store.table, DID, records, 0, 9, False)
    assert [r.collection for r in rows] == ["Ã©", "é"]


def test_ranges_that_are_not_pairs_are_a_type_error() -> None:
    native = compiled()
    store = MemoryCar(make_repo(3).car)
    assert store.table is not None
    with pytest.raises(TypeError, match="ranges"):
        native.walk(store.data, store.table, store.roots[0], True, True, [[b"a", b"b"]])


class _Pair(NamedTuple):
    left: object
    right: object


class _SubPair(_Pair):
    __slots__ = ()


def test_row_makes_the_tuple_type_and_leaves_it_out_of_the_gc_when_it_holds_no_container() -> None:
    native = compiled()
    moment = datetime(2025, 1, 2, tzinfo=UTC)
    row = native.row(_Pair, "a", moment)
    assert type(row) is _Pair
    assert row == _Pair("a", moment)
    assert not gc.is_tracked(row)
    assert not gc.is_tracked(native.row(_SubPair, b"a", 1))
    assert native.row(_Pair) == ()


@pytest.mark.parametrize(
    "value",
    [["a list"], {}, ("a", []), _Pair("a", "b")],
    ids=["list", "empty dict (tracked once it holds a container)", "tuple of a list", "row"],
)
def test_a_row_holding_what_can_be_tracked_stays_tracked(value: object) -> None:
    row = compiled().row(_Pair, "a", value)
    assert row == _Pair("a", value)
    assert gc.is_tracked(row)


def test_an_untracked_row_cannot_leak_a_cycle() -> None:
    holder: dict[str, object] = {}
    row = compiled().row(_Pair, "a", holder)
    holder["row"] = row  # a cycle: the collector must still see it
    held = type("Held", (), {})()
    alive = weakref.ref(held)
    holder["held"] = held
    del holder, row, held
    gc.collect()
    assert alive() is None


class _Open(tuple):
    pass


@pytest.mark.parametrize(
    "args",
    [(), (list, 1), ("not a type", 1), (int, 1), (tuple, 1), (os.stat_result, 1), (_Open, 1)],
)
def test_row_wants_a_class_statement_tuple_subclass_first(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match="tuple subclass"):
        compiled().row(*args)


def test_rows_refuses_a_tuple_type_made_in_c() -> None:
    native = compiled()
    store = MemoryCar(make_repo(3).car)
    assert store.table is not None
    with pytest.raises(TypeError, match="tuple subclass"):
        native.rows(time.struct_time, store.data, store.table, DID, b"", 0, 1, False)


def test_record_parts_from_c_are_left_out_of_the_gc() -> None:
    compiled()
    with read_repo(make_repo(20).car, verify="hashes") as repo:
        parts = list(repo.record_parts())
    assert len(parts) == 20
    assert not any(gc.is_tracked(p) for p in parts)
