from __future__ import annotations

import cbrrr
import pytest

from bsky_backfill.atproto.cid import CID
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.repo import RepoRecord, read_repo
from bsky_backfill.errors import BadSignature, CorruptBlock, InvalidCommit, TruncatedRepo
from bsky_backfill.fakenet.repo_writer import build_repo, encode_car
from tests.support.repos import DID, KEY, frame_ends, make_records, make_repo


def triples(records) -> list[tuple[str, str, str]]:
    return [(r.collection, r.rkey, r.cid) for r in records]


def test_read_repo_yields_exactly_the_written_records() -> None:
    repo = make_repo(300)
    with read_repo(repo.car, signing_key=KEY.did_key, did=DID) as read:
        assert read.did == DID
        assert read.rev == repo.rev
        assert read.commit_cid == str(repo.commit_cid.encode("base32"))
        got = triples(read.records)
    expected = [
        (k.split("/")[0], k.split("/")[1], str(c.encode("base32")))
        for k, c in sorted(repo.record_cids.items())
    ]
    assert got == expected


def test_records_can_be_iterated_twice() -> None:
    with read_repo(make_repo(30).car, signing_key=KEY.did_key) as read:
        assert triples(read.records) == triples(read.records)


@pytest.mark.parametrize("order", ["newest_first", "tree", "shuffled"])
def test_block_order_duplicates_and_unreferenced_blocks_do_not_matter(order: str) -> None:
    plain = make_repo(120)
    odd = make_repo(120, order=order, extra_blocks=[b"a", b"b"], duplicate_every=4)
    with (
        read_repo(plain.car, signing_key=KEY.did_key) as a,
        read_repo(odd.car, signing_key=KEY.did_key) as b,
    ):
        assert triples(a.records) == triples(b.records)


def test_record_values_keep_links_distinct_from_bytes() -> None:
    with read_repo(make_repo(200).car, signing_key=KEY.did_key) as read:
        values = {(r.collection, r.rkey): r.value for r in read.records}
    images = [
        v["embed"]["images"][0]["image"]["ref"]
        for v in values.values()
        if "images" in v.get("embed", {})
    ]
    payloads = [v["tag"] for (c, _), v in values.items() if c == "com.example.bookmark"]
    assert images
    assert payloads
    assert all(isinstance(ref, CID) for ref in images)
    assert {ref.codec for ref in images} == {0x55}
    assert all(type(p) is bytes for p in payloads)


def test_a_collection_filter_returns_exactly_that_subset() -> None:
    repo = make_repo(400)
    with read_repo(repo.car, signing_key=KEY.did_key) as full:
        everything = triples(full.records)
    with read_repo(
        repo.car,
        signing_key=KEY.did_key,
        collections=["app.bsky.feed.post", "com.example.bookmark"],
    ) as some:
        subset = triples(some.records)
    assert subset == [
        t for t in everything if t[0] in ("app.bsky.feed.post", "com.example.bookmark")
    ]
    with read_repo(repo.car, signing_key=KEY.did_key, collections="app.bsky.feed.like") as one:
        assert {t[0] for t in triples(one.records)} == {"app.bsky.feed.like"}


def test_reading_from_a_file_equals_reading_from_bytes(tmp_path) -> None:
    repo = make_repo(250)
    path = tmp_path / "repo.car"
    path.write_bytes(repo.car)
    with (
        read_repo(path, signing_key=KEY.did_key) as a,
        read_repo(repo.car, signing_key=KEY.did_key) as b,
    ):
        assert list(a.records) == list(b.records)


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_the_signature_is_checked_against_the_given_key(curve: str) -> None:
    key = Keypair.from_seed(curve, "sig-test")
    repo = make_repo(10, key=key)
    read_repo(repo.car, signing_key=key.did_key).close()
    read_repo(repo.car, signing_key=key.public_key.multikey).close()
    other = Keypair.from_seed(curve, "someone else")
    with pytest.raises(BadSignature):
        read_repo(repo.car, signing_key=other.did_key)


def test_lower_verify_levels_skip_the_signature() -> None:
    repo = make_repo(10)
    for level in ("hashes", "none"):
        with read_repo(repo.car, verify=level) as read:
            assert len(list(read.records)) == 10


def test_a_commit_for_another_did_is_rejected() -> None:
    with pytest.raises(InvalidCommit, match="not did:plc:other"):
        read_repo(make_repo(3).car, signing_key=KEY.did_key, did="did:plc:other")


def test_a_flipped_byte_in_a_record_fails_the_hash_check_unless_verify_is_none() -> None:
    repo = make_repo(50)
    _, cid = sorted(repo.record_cids.items())[10]
    block = repo.blocks[cid.cid_bytes]
    at = repo.car.index(block) + len(block) - 2
    bad = repo.car[:at] + bytes([repo.car[at] ^ 0x01]) + repo.car[at + 1 :]
    with read_repo(bad, signing_key=KEY.did_key) as read, pytest.raises(CorruptBlock):
        list(read.records)
    with read_repo(bad, verify="none") as unchecked:
        assert len(list(unchecked.records)) == 50


def test_a_car_cut_at_a_block_boundary_is_truncation() -> None:
    repo = make_repo(200, order="tree")
    cut = repo.car[: frame_ends(repo.car)[len(repo.blocks) // 2]]
    with read_repo(cut, signing_key=KEY.did_key) as read, pytest.raises(TruncatedRepo):
        list(read.records)


def test_a_car_without_its_commit_is_truncation() -> None:
    repo = make_repo(5, order="newest_first")
    without_commit = repo.car[: frame_ends(repo.car)[0]] + repo.car[frame_ends(repo.car)[1] :]
    with pytest.raises(TruncatedRepo):
        read_repo(without_commit, signing_key=KEY.did_key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version 2"),
        ({"did": "not a did"}, "not a valid DID"),
        ({"rev": "not-a-tid"}, "not a TID"),
        ({"data": "bafy..."}, "data is not"),
    ],
)
def test_a_commit_that_breaks_the_spec_is_invalid(change: dict, message: str) -> None:
    good = build_repo(DID, make_records(3), rev="3l4cqjgbemz2c", sign=KEY.sign)
    commit = cbrrr.decode_dag_cbor(good.blocks[good.commit_cid.cid_bytes]) | change
    data = bytes(cbrrr.encode_dag_cbor(commit))
    cid = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(data)
    blocks = [
        (cid.cid_bytes, data),
        *((c, d) for c, d in good.blocks.items() if c != good.commit_cid.cid_bytes),
    ]
    with pytest.raises(InvalidCommit, match=message):
        read_repo(encode_car([cid], blocks), verify="hashes")


def test_verify_full_without_a_key_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="signing_key"):
        read_repo(make_repo(1).car)
    with pytest.raises(ValueError, match="verify must be"):
        read_repo(make_repo(1).car, verify="some")


def test_record_uri_and_cid_string() -> None:
    record = RepoRecord(
        "app.bsky.feed.like",
        "3l4cqjgbemz2c",
        CID.parse("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm").raw,
        {},
    )
    assert record.uri(DID) == f"at://{DID}/app.bsky.feed.like/3l4cqjgbemz2c"
    assert record.cid == "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
