"""Inputs built to hang or exhaust a reader: MST cycles (possible only when hashes are not
checked), nesting thousands deep, varints that never end, and a gzip bomb served as a
repo. Each ends in a typed error, fast, in bounded memory."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator

import cbrrr
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bsky_backfill.atproto.car import CarLimits
from bsky_backfill.atproto.cbor import decode_record
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.errors import InvalidRepo, MalformedBlock, RepoTooLarge, TruncatedRepo
from bsky_backfill.fakenet.repo_writer import encode_car
from tests.support.repos import KEY

TYPED = (InvalidRepo, TruncatedRepo, RepoTooLarge)
DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def fake_cid(label: str) -> bytes:
    """A well-formed dag-cbor CIDv1 whose digest is not the hash of anything stored."""
    return b"\x01\x71\x12\x20" + hashlib.sha256(label.encode()).digest()


def mst_node(left: bytes | None, entries: list[tuple[bytes, bytes, bytes | None]]) -> bytes:
    node = {
        "l": cbrrr.CID(left) if left else None,
        "e": [
            {"p": 0, "k": key, "v": cbrrr.CID(value), "t": cbrrr.CID(right) if right else None}
            for key, value, right in entries
        ],
    }
    return bytes(cbrrr.encode_dag_cbor(node))


def car_with_tree(root: bytes, nodes: dict[bytes, bytes]) -> bytes:
    """A repo whose commit's data is ``root``, with ``nodes`` (CID -> bytes) stored as
    given: with hashes unchecked, the tree may be any graph, cycles included."""
    commit = {
        "did": DID,
        "version": 3,
        "data": cbrrr.CID(root),
        "rev": "3laaaaaaaaa22",
        "prev": None,
        "sig": b"\x00" * 64,
    }
    commit_cid = fake_cid("commit")
    blocks = [(commit_cid, bytes(cbrrr.encode_dag_cbor(commit))), *nodes.items()]
    return encode_car([cbrrr.CID(commit_cid)], blocks)


def read_all(car: bytes, verify: str) -> None:
    key = KEY.did_key if verify == "full" else None
    limits = CarLimits(max_total_bytes=1024**2)
    with read_repo(car, signing_key=key, verify=verify, limits=limits) as repo:
        for _ in repo.records:
            pass


def assert_typed_fast_and_small(car: bytes, verify: str) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(TYPED):
            read_all(car, verify)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 32 * 1024**2


RECORD = bytes(cbrrr.encode_dag_cbor({"$type": "app.bsky.feed.like", "createdAt": "x"}))
RECORD_CID = fake_cid("record")


@pytest.mark.parametrize("verify", ["none", "hashes", "full"])
def test_a_tree_node_that_contains_itself_is_refused(verify: str) -> None:
    loop = fake_cid("loop")
    node = mst_node(loop, [(b"app.bsky.feed.like/3laaaaaaaaa22", RECORD_CID, loop)])
    assert_typed_fast_and_small(car_with_tree(loop, {loop: node, RECORD_CID: RECORD}), verify)


@pytest.mark.parametrize("verify", ["none", "hashes", "full"])
def test_two_tree_nodes_pointing_at_each_other_are_refused(verify: str) -> None:
    a, b = fake_cid("a"), fake_cid("b")
    nodes = {
        a: mst_node(b, [(b"app.bsky.feed.like/3laaaaaaaaa22", RECORD_CID, None)]),
        b: mst_node(a, [(b"app.bsky.feed.like/3laaaaaaaaa23", RECORD_CID, None)]),
        RECORD_CID: RECORD,
    }
    assert_typed_fast_and_small(car_with_tree(a, nodes), verify)


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(900, 200_000), kind=st.sampled_from([b"\x81", b"\xa1\x61a"]))
def test_records_nested_thousands_deep_decode_or_are_malformed_never_crash(
    depth: int, kind: bytes
) -> None:
    data = kind * depth + b"\x00"  # arrays (or maps) of one, nested ``depth`` deep
    started = time.monotonic()
    with contextlib.suppress(MalformedBlock):
        decode_record(data, fake_cid("deep"))
    assert time.monotonic() - started < 1


@settings(max_examples=100, deadline=None)
@given(length=st.integers(11, 64), tail=st.binary(max_size=64))
def test_a_varint_that_never_ends_is_a_malformed_car(length: int, tail: bytes) -> None:
    assert_typed_fast_and_small(b"\xff" * length + tail, "none")


@pytest.fixture
async def gzip_bomb() -> AsyncIterator[str]:
    """A host answering getRepo with 64 KB of gzip that inflates to 1 GiB."""
    chunk = gzip.compress(b"\x00" * (64 * 1024**2), compresslevel=9)
    body = chunk * 16  # concatenated gzip members: 16 x 64 MiB once inflated

    async def answer(_: web.Request) -> web.Response:
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/vnd.ipld.car"},
        )

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.getRepo", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_gzip_bomb_stops_at_the_repo_cap_in_bounded_memory(gzip_bomb: str) -> None:
    tracemalloc.start()
    try:
        async with XrpcClient.open() as client:
            with pytest.raises(RepoTooLarge):
                await client.get_body(
                    gzip_bomb,
                    "com.atproto.sync.getRepo",
                    {"did": DID},
                    max_bytes=32 * 1024**2,
                    too_large=RepoTooLarge,
                )
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 96 * 1024**2, peak
