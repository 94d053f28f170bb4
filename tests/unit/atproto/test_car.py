from __future__ import annotations

import hashlib

import cbrrr
import pytest

from bsky_backfill.atproto.car import CarLimits, FileCar, MemoryCar, check_block, open_car
from bsky_backfill.atproto.cid import cid_for_dag_cbor
from bsky_backfill.errors import CorruptBlock, MalformedCar, RepoTooLarge, TruncatedRepo
from bsky_backfill.fakenet.repo_writer import encode_car
from tests.support.repos import frame_ends, make_repo


def test_memory_car_indexes_every_block_and_the_root() -> None:
    repo = make_repo(40)
    car = MemoryCar(repo.car)
    assert car.roots == (repo.commit_cid.cid_bytes,)
    assert len(car) == len(repo.blocks)
    for cid, data in repo.blocks.items():
        assert car.get(cid) == data


def test_file_car_matches_memory_car_across_chunk_boundaries(tmp_path) -> None:
    repo = make_repo(300)
    path = tmp_path / "repo.car"
    path.write_bytes(repo.car)
    limits = CarLimits(max_block_bytes=4096, chunk_bytes=1)  # forces many small chunks
    with FileCar(path, limits) as on_disk:
        assert len(on_disk) == len(repo.blocks)
        assert all(on_disk.get(cid) == data for cid, data in repo.blocks.items())


def test_duplicate_blocks_are_counted_and_the_first_copy_wins() -> None:
    repo = make_repo(20, duplicate_every=3)
    car = MemoryCar(repo.car)
    assert car.duplicates > 0
    assert len(car) == len(repo.blocks)


def test_a_cut_inside_a_frame_is_truncation() -> None:
    data = make_repo(10).car
    cut = frame_ends(data)[3] - 5
    with pytest.raises(TruncatedRepo, match="inside a frame"):
        MemoryCar(data[:cut])


def test_a_cut_inside_a_frame_is_truncation_for_files_too(tmp_path) -> None:
    data = make_repo(10).car
    path = tmp_path / "cut.car"
    path.write_bytes(data[: frame_ends(data)[3] - 5])
    with pytest.raises(TruncatedRepo):
        FileCar(path)


@pytest.mark.parametrize("data", [b"", b"\x05\xa1", b"\x80"])
def test_a_cut_inside_the_header_is_truncation(data: bytes) -> None:
    with pytest.raises(TruncatedRepo):
        MemoryCar(data)


def test_a_missing_block_is_truncation_naming_the_cid() -> None:
    car = MemoryCar(make_repo(5).car)
    with pytest.raises(TruncatedRepo, match="lacks block bafyrei"):
        car.get(cid_for_dag_cbor(b"never written"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\xf6", "not a CAR v1 header"),
        (b"\x01\xa0", "not a CAR v1 header"),
        (b"\x0a\xa1gversion\x01", "no roots"),
        (b"\x03\xff\xff\xff", "not DAG-CBOR"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "header length"),
    ],
)
def test_a_bad_header_is_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedCar, match=message):
        MemoryCar(data)


def test_a_frame_over_the_block_cap_is_malformed() -> None:
    with pytest.raises(MalformedCar, match="block cap"):
        MemoryCar(make_repo(3).car, CarLimits(max_block_bytes=32))


def test_file_car_counts_duplicates_and_keeps_the_first_copy_like_memory_car(tmp_path) -> None:
    repo = make_repo(60, duplicate_every=3)
    path = tmp_path / "repo.car"
    path.write_bytes(repo.car)
    in_memory = MemoryCar(repo.car)
    with FileCar(path) as on_disk:
        assert on_disk.duplicates == in_memory.duplicates > 0
        assert len(on_disk) == len(in_memory) == len(repo.blocks)
        assert all(on_disk.get(cid) == data for cid, data in repo.blocks.items())


def test_file_car_tells_apart_cids_whose_digests_share_their_index_key(tmp_path) -> None:
    """The compact index keys a CID by 8 bytes of its digest; the full CID decides."""
    shared = bytes([1, 0x71, 0x12, 0x20]) + b"K" * 8
    first, second, absent = (shared + bytes([tail]) * 24 for tail in (1, 2, 3))
    other_codec = bytes([1, 0x70, 0x12, 0x20]) + hashlib.sha256(b"pb").digest()
    frames = [(first, b"one"), (second, b"two"), (first, b"copy"), (other_codec, b"pb")]
    path = tmp_path / "crafted.car"
    path.write_bytes(encode_car([cbrrr.CID(first)], frames))
    with FileCar(path) as car:
        assert (car.get(first), car.get(second), car.get(other_codec)) == (b"one", b"two", b"pb")
        assert (len(car), car.duplicates) == (3, 1)
        assert absent not in car
        assert first in car
        with pytest.raises(TruncatedRepo, match="lacks block"):
            car.get(absent)


def test_a_car_with_only_a_header_has_no_blocks() -> None:
    root = cid_for_dag_cbor(b"\xa0")
    car = MemoryCar(encode_car([cbrrr.CID(root)], []))
    assert car.roots == (root,)
    assert len(car) == 0


def test_a_frame_with_a_bad_cid_is_malformed() -> None:
    repo = make_repo(1)
    header_end = frame_ends(repo.car)[0]
    bad = repo.car[:header_end] + bytes([6, 0x07, 1, 2, 3, 4, 5])
    with pytest.raises(MalformedCar, match="bad CID"):
        MemoryCar(bad)


def test_a_car_over_the_total_cap_is_too_large(tmp_path) -> None:
    data = make_repo(10).car
    limits = CarLimits(max_total_bytes=len(data) - 1)
    with pytest.raises(RepoTooLarge):
        MemoryCar(data, limits)
    path = tmp_path / "big.car"
    path.write_bytes(data)
    with pytest.raises(RepoTooLarge):
        FileCar(path, limits)


def test_check_block_accepts_the_right_bytes_and_rejects_others() -> None:
    data = b"\xa1aa\x01"
    cid = cid_for_dag_cbor(data)
    check_block(cid, data)
    with pytest.raises(CorruptBlock, match="does not match its hash"):
        check_block(cid, data + b"x")


def test_check_block_rejects_a_non_sha256_cid() -> None:
    blake_cid = bytes([1, 0x71, 0xA0, 0xE4, 0x02, 0x20]) + hashlib.sha256(b"x").digest()
    with pytest.raises(CorruptBlock, match="sha2-256"):
        check_block(blake_cid, b"x")


def test_open_car_takes_bytes_or_a_path(tmp_path) -> None:
    data = make_repo(5).car
    path = tmp_path / "r.car"
    path.write_bytes(data)
    assert isinstance(open_car(data), MemoryCar)
    with open_car(str(path)) as by_str, open_car(path) as by_path:
        assert len(by_str) == len(by_path) == len(MemoryCar(data))
    with pytest.raises(TypeError):
        open_car(42)  # type: ignore[arg-type]
