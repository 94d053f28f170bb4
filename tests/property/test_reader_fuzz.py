"""Random and mutated CAR bytes: only the reader's typed errors, fast, in bounded memory."""

from __future__ import annotations

import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsky_backfill.atproto.car import CarLimits
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.errors import InvalidRepo, RepoTooLarge, TruncatedRepo
from tests.support.repos import KEY, frame_ends, make_repo

TYPED = (InvalidRepo, TruncatedRepo, RepoTooLarge)
LIMITS = CarLimits(max_total_bytes=1024**2, max_block_bytes=64 * 1024)
SEED_CARS = [make_repo(n, seed=n).car for n in (0, 1, 5, 40)]
FUZZ = settings(
    max_examples=400,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def read_everything(data: bytes, verify: str) -> int:
    """Read ``data`` as a repo; return the record count or raise."""
    key = KEY.did_key if verify == "full" else None
    with read_repo(data, signing_key=key, verify=verify, limits=LIMITS) as repo:
        return sum(1 for _ in repo.records)


def assert_only_typed_errors(data: bytes, verify: str) -> None:
    tracemalloc.start()
    try:
        read_everything(data, verify)
    except TYPED:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 32 * 1024**2, f"peak {peak} bytes for a {len(data)}-byte input"


@FUZZ
@given(data=st.binary(max_size=4096), verify=st.sampled_from(["full", "hashes", "none"]))
def test_random_bytes_raise_only_typed_errors(data: bytes, verify: str) -> None:
    assert_only_typed_errors(data, verify)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    for kind, where, arg in edits:
        if not data:
            break
        at = where % len(data)
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ arg]) + data[at + 1 :]
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + bytes([arg]) + data[at:]
        else:
            data = data[:at] + data[at + arg :]
    return data


@FUZZ
@given(
    base=st.sampled_from(SEED_CARS),
    edits=st.lists(mutation, min_size=1, max_size=4),
    verify=st.sampled_from(["full", "hashes", "none"]),
)
def test_mutated_cars_raise_only_typed_errors(
    base: bytes, edits: list[tuple[str, int, int]], verify: str
) -> None:
    assert_only_typed_errors(mutate(base, edits), verify)


def outcome(car: bytes | Path, verify: str) -> object:
    """The records read, or the type of error raised."""
    key = KEY.did_key if verify == "full" else None
    try:
        with read_repo(car, signing_key=key, verify=verify, limits=LIMITS) as repo:
            return [(r.collection, r.rkey, r.cid_bytes, r.value) for r in repo.records]
    except TYPED as exc:
        return type(exc)


@settings(FUZZ, max_examples=150)
@given(
    base=st.sampled_from(SEED_CARS),
    edits=st.lists(mutation, max_size=3),
    verify=st.sampled_from(["full", "none"]),
)
def test_a_car_read_from_a_file_reads_exactly_as_from_memory(
    base: bytes, edits: list[tuple[str, int, int]], verify: str
) -> None:
    """Files use the compact index, bytes a dict: same records, same errors."""
    data = mutate(base, edits)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "repo.car"
        path.write_bytes(data)
        assert outcome(path, verify) == outcome(data, verify)


@FUZZ
@given(length=st.integers(2**20, 2**63 - 1))
def test_huge_declared_frame_lengths_are_refused_without_allocating(length: int) -> None:
    header_end = frame_ends(SEED_CARS[1])[0]
    varint = bytearray()
    while True:
        low, length = length & 0x7F, length >> 7
        varint.append(low | (0x80 if length else 0))
        if not length:
            break
    assert_only_typed_errors(SEED_CARS[1][:header_end] + bytes(varint) + b"\x01", "none")
