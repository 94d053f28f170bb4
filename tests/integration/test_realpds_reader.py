"""The repo reader against repos the real reference PDS wrote (``shared/realpds``).

The expected answers come from the server itself (listRecords, getRecord,
getLatestCommit, the PLC DID document), never from our own writer. The damage tests
parse the CAR framing here, independently of ``bsky_backfill.atproto.car``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbrrr
import pytest

from bsky_backfill.atproto.cbor import to_json
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.errors import BadSignature, CorruptBlock, InvalidCommit, TruncatedRepo
from tests.support.native import parts_both_ways
from tests.support.realpds import PdsClient, RepoSnapshot
from tests.support.realpds_population import LIKE, POST, PROFILE, THING, post_text

pytestmark = pytest.mark.realpds

Row = tuple[str, str, str, str]  # collection, rkey, cid, value as atproto JSON


def read_all(car: bytes | str | Path, snap: RepoSnapshot, **kwargs: Any) -> list[Row]:
    """Every record the reader yields, fully verified against the account's PLC key."""
    kwargs.setdefault("signing_key", snap.signing_key())
    with read_repo(car, did=snap.did, **kwargs) as repo:
        return [(r.collection, r.rkey, r.cid, to_json(r.value)) for r in repo.records]


def triples(rows: Iterable[Row]) -> set[tuple[str, str, str]]:
    """``{(collection, rkey, cid)}`` of reader rows."""
    return {(c, k, cid) for c, k, cid, _ in rows}


# --- what a sound repo gives -------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave"])
def test_records_match_list_records(realpds_accounts: dict[str, RepoSnapshot], name: str) -> None:
    snap = realpds_accounts[name]
    rows = read_all(snap.car, snap)
    assert triples(rows) == snap.expected
    assert len(rows) == len(snap.expected)  # no duplicates either
    if name == "carol":
        assert len(rows) > 1000


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave"])
def test_commit_fields_match_the_server(
    realpds_accounts: dict[str, RepoSnapshot], name: str
) -> None:
    snap = realpds_accounts[name]
    with read_repo(snap.car, signing_key=snap.signing_key(), did=snap.did) as repo:
        assert repo.did == snap.did
        assert repo.rev == snap.rev
        assert repo.commit_cid == snap.commit_cid


def test_records_in_strictly_increasing_key_order(
    realpds_accounts: dict[str, RepoSnapshot],
) -> None:
    snap = realpds_accounts["carol"]
    keys = [f"{c}/{k}".encode() for c, k, _, _ in read_all(snap.car, snap)]
    assert all(a < b for a, b in itertools.pairwise(keys))


def test_deleted_records_are_gone_and_updates_show_the_new_value(
    realpds_accounts: dict[str, RepoSnapshot],
) -> None:
    snap = realpds_accounts["alice"]
    rows = {(c, k): json.loads(v) for c, k, _, v in read_all(snap.car, snap)}
    assert snap.deleted
    assert not snap.deleted & rows.keys()
    assert snap.updated <= rows.keys()
    for collection, rkey in snap.updated:
        value = rows[(collection, rkey)]
        if collection == POST:
            assert value["text"].endswith(" (edited)")
        elif collection == THING:
            assert value["edited"] is True
        elif collection == PROFILE:
            assert value == {"$type": PROFILE, "displayName": "alice (edited)"}


@pytest.mark.parametrize("name", ["alice", "carol"])
def test_values_equal_the_servers_json(
    realpds_accounts: dict[str, RepoSnapshot], name: str
) -> None:
    """Every value, in atproto JSON form (``$link`` / ``$bytes``), equals listRecords's."""
    snap = realpds_accounts[name]
    for collection, rkey, _, value in read_all(snap.car, snap):
        assert json.loads(value) == snap.records[(collection, rkey)]["value"], (collection, rkey)


def test_post_value_equals_get_record(
    realpds_accounts: dict[str, RepoSnapshot], realpds_client: PdsClient
) -> None:
    snap = realpds_accounts["alice"]
    with read_repo(snap.car, signing_key=snap.signing_key(), did=snap.did) as repo:
        posts = [r for r in repo.records if r.collection == POST]
    unicode_post = next(r for r in posts if "☕" in r.value["text"])
    reply = next(r for r in posts if "reply" in r.value)
    for record in (posts[0], unicode_post, reply):
        served = realpds_client.get_record(snap.did, POST, record.rkey)
        assert record.cid == served["cid"]
        assert record.value["text"] == served["value"]["text"]
        assert record.value["createdAt"] == served["value"]["createdAt"]
        assert json.loads(to_json(record.value)) == served["value"]


def test_links_and_bytes_keep_their_kind(realpds_accounts: dict[str, RepoSnapshot]) -> None:
    """A CID link stays a link and a byte string stays bytes (libipld alone conflates them)."""
    snap = realpds_accounts["alice"]
    things = {k: json.loads(v) for c, k, _, v in read_all(snap.car, snap, collections=[THING])}
    linked = [t for t in things.values() if "ref" in t]
    binary = [t for t in things.values() if "data" in t]
    assert linked
    assert binary
    assert all(set(t["ref"]) == {"$link"} and t["ref"]["$link"].startswith("b") for t in linked)
    assert all(set(t["data"]) == {"$bytes"} for t in binary)


@pytest.mark.parametrize(
    "wanted",
    [[LIKE], [POST, THING], [PROFILE], ["app.bsky.graph.follow"], ["com.example.absent"]],
)
def test_collection_filter_returns_exactly_that_subset(
    realpds_accounts: dict[str, RepoSnapshot], wanted: list[str]
) -> None:
    snap = realpds_accounts["carol"]
    rows = read_all(snap.car, snap, collections=wanted)
    assert triples(rows) == {t for t in snap.expected if t[0] in wanted}


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave"])
@pytest.mark.parametrize("wanted", [None, [LIKE, PROFILE]])
def test_the_c_reader_reads_the_real_servers_repos_itself_and_exactly(
    realpds_accounts: dict[str, RepoSnapshot], name: str, wanted: list[str] | None
) -> None:
    snap = realpds_accounts[name]
    parts = parts_both_ways(
        snap.car, all_native=True, signing_key=snap.signing_key(), collections=wanted
    )
    expected = {t for t in snap.expected if wanted is None or t[0] in wanted}
    assert {(p.collection, p.rkey, p.cid) for p in parts} == expected
    assert [p.json for p in parts] == [
        row[3] for row in read_all(snap.car, snap, collections=wanted)
    ]


def test_file_path_gives_identical_results(
    realpds_accounts: dict[str, RepoSnapshot], tmp_path: Path
) -> None:
    snap = realpds_accounts["carol"]
    path = tmp_path / "carol.car"
    path.write_bytes(snap.car)
    from_bytes = read_all(snap.car, snap)
    assert read_all(path, snap) == from_bytes
    assert read_all(str(path), snap) == from_bytes
    with read_repo(path, signing_key=snap.signing_key()) as repo:
        assert (repo.did, repo.rev, repo.commit_cid) == (snap.did, snap.rev, snap.commit_cid)


# --- keys and identity -------------------------------------------------------------------


def test_the_plc_document_gives_the_legacy_or_multikey_form(
    realpds_accounts: dict[str, RepoSnapshot],
) -> None:
    snap = realpds_accounts["alice"]
    assert snap.key_type in {"Multikey", "EcdsaSecp256k1VerificationKey2019"}
    assert snap.signing_key().startswith("did:key:zQ3s")  # compressed secp256k1 multikey


def test_wrong_key_is_a_bad_signature(realpds_accounts: dict[str, RepoSnapshot]) -> None:
    snap = realpds_accounts["alice"]
    for curve in ("k256", "p256"):
        with pytest.raises(BadSignature):
            read_all(snap.car, snap, signing_key=Keypair.generate(curve).did_key)


def test_another_accounts_key_is_a_bad_signature(
    realpds_accounts: dict[str, RepoSnapshot],
) -> None:
    alice, bob = realpds_accounts["alice"], realpds_accounts["bob"]
    with pytest.raises(BadSignature):
        read_all(alice.car, alice, signing_key=bob.signing_key())


def test_another_did_is_an_invalid_commit(realpds_accounts: dict[str, RepoSnapshot]) -> None:
    alice, bob = realpds_accounts["alice"], realpds_accounts["bob"]
    with pytest.raises(InvalidCommit), read_repo(alice.car, did=bob.did, verify="hashes"):
        pass


# --- damaged CARs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One ``varint(len) | CID | block`` section of a CAR: byte offsets and the CID."""

    start: int
    block_start: int
    end: int
    cid: bytes


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def parse_car(car: bytes) -> tuple[bytes, list[Frame]]:
    """The root CID and every frame of a CARv1 (independent of the code under test)."""
    length, pos = _varint(car, 0)
    root: bytes = decode_map(car[pos : pos + length])["roots"][0].cid_bytes
    pos += length
    frames = []
    while pos < len(car):
        length, body = _varint(car, pos)
        cid_end = body
        for _ in range(3):  # version, codec, multihash code
            _, cid_end = _varint(car, cid_end)
        digest_len, cid_end = _varint(car, cid_end)
        cid_end += digest_len
        frames.append(Frame(pos, cid_end, body + length, car[body:cid_end]))
        pos = body + length
    assert pos == len(car)
    return root, frames


def decode_map(block: bytes) -> dict[str, Any]:
    """A DAG-CBOR map block, links as ``cbrrr.CID`` (independent of the code under test)."""
    value = cbrrr.decode_dag_cbor(block)
    assert isinstance(value, dict)
    return value


def flip(car: bytes, index: int) -> bytes:
    """``car`` with one bit of the byte at ``index`` flipped."""
    return car[:index] + bytes([car[index] ^ 0x01]) + car[index + 1 :]


_DAG_CBOR_CID_PREFIX = bytes((0x01, 0x71, 0x12, 0x20))


def flip_inside_a_link(car: bytes, frame: Frame) -> bytes:
    """Flip the last digest byte of the first CID link in a block: still valid DAG-CBOR."""
    at = car.index(_DAG_CBOR_CID_PREFIX, frame.block_start, frame.end)
    return flip(car, at + len(_DAG_CBOR_CID_PREFIX) + 31)


def test_flipped_byte_in_a_record_is_a_corrupt_block(
    realpds_accounts: dict[str, RepoSnapshot],
) -> None:
    snap = realpds_accounts["alice"]
    text = post_text("alice", 10)
    key = next(k for k, rec in snap.records.items() if rec["value"].get("text") == text)
    assert key not in snap.updated  # the CAR holds this block once, as the live record
    needle = text.encode()
    assert snap.car.count(needle) == 1
    # 'p' of "post" -> 'q': the block stays valid DAG-CBOR, only its hash tells.
    damaged = flip(snap.car, snap.car.index(needle) + len("alice "))
    with pytest.raises(CorruptBlock):
        read_all(damaged, snap)


@pytest.mark.parametrize("where", ["commit", "mst root", "mst node"])
def test_flipped_byte_in_a_tree_block_is_a_corrupt_block(
    realpds_accounts: dict[str, RepoSnapshot], where: str
) -> None:
    snap = realpds_accounts["carol"]
    root, frames = parse_car(snap.car)
    by_cid = {f.cid: f for f in frames}
    commit = by_cid[root]
    data_cid = decode_map(snap.car[commit.block_start : commit.end])["data"].cid_bytes
    if where == "commit":
        target = commit
    elif where == "mst root":
        target = by_cid[data_cid]
    else:
        target = next(
            f
            for f in frames
            if f.cid not in (root, data_cid)
            and set(decode_map(snap.car[f.block_start : f.end])) == {"e", "l"}
        )
    with pytest.raises(CorruptBlock):
        read_all(flip_inside_a_link(snap.car, target), snap)


@pytest.mark.parametrize("keep", ["none", "half", "all but one"])
def test_cut_at_a_block_boundary_is_a_truncated_repo(
    realpds_accounts: dict[str, RepoSnapshot], keep: str
) -> None:
    snap = realpds_accounts["carol"]
    _, frames = parse_car(snap.car)
    index = {"none": 0, "half": len(frames) // 2, "all but one": len(frames) - 1}[keep]
    cut = snap.car[: frames[index].start]
    with pytest.raises(TruncatedRepo):
        read_all(cut, snap)


def test_cut_inside_a_block_is_a_truncated_repo(
    realpds_accounts: dict[str, RepoSnapshot], tmp_path: Path
) -> None:
    snap = realpds_accounts["carol"]
    _, frames = parse_car(snap.car)
    middle = frames[len(frames) // 2]
    cut = snap.car[: (middle.block_start + middle.end) // 2]
    with pytest.raises(TruncatedRepo):
        read_all(cut, snap)
    path = tmp_path / "cut.car"
    path.write_bytes(cut)
    with pytest.raises(TruncatedRepo):
        read_all(path, snap)
