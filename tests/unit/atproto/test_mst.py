from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbrrr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.atproto.cid import cid_for_dag_cbor
from bsky_backfill.atproto.mst import KeyRanges, key_layer, walk_mst
from bsky_backfill.errors import MalformedMst, TruncatedRepo
from bsky_backfill.fakenet.repo_writer import build_repo, layer_of
from tests.support.repos import DID, KEY, make_records


class Blocks(dict[bytes, bytes]):
    """A block store for hand-made trees that counts fetches."""

    fetched: int = 0

    def put(self, value: Any) -> cbrrr.CID:
        data = bytes(cbrrr.encode_dag_cbor(value))
        cid = cid_for_dag_cbor(data)
        self[cid] = data
        return cbrrr.CID(cid)

    def fetch(self, cid: bytes) -> bytes:
        self.fetched += 1
        if cid not in self:
            raise TruncatedRepo("missing")
        return self[cid]


def entry(key: bytes, *, p: int = 0, t: cbrrr.CID | None = None) -> dict[str, Any]:
    return {"k": key[p:], "p": p, "t": t, "v": cbrrr.CID(cid_for_dag_cbor(key))}


def keys_on_layer(layer: int, count: int, collection: str = "app.bsky.feed.like") -> list[bytes]:
    found, i = [], 0
    while len(found) < count:
        key = f"{collection}/k{i:06d}".encode()
        if key_layer(key) == layer:
            found.append(key)
        i += 1
    return found


def test_key_layer_matches_the_interop_heights(interop_dir: Path) -> None:
    cases = json.loads((interop_dir / "mst" / "key_heights.json").read_text())
    for case in cases:
        assert key_layer(case["key"].encode()) == case["height"], case


def test_the_writer_and_the_reader_agree_on_layers(interop_dir: Path) -> None:
    for line in (interop_dir / "mst" / "example_keys.txt").read_text().split():
        assert key_layer(line.encode()) == layer_of(line.encode())


@pytest.mark.parametrize("count", [0, 1, 2, 17, 1500])
def test_walk_yields_every_key_in_order(count: int) -> None:
    records = make_records(count, seed=count)
    repo = build_repo(DID, records, rev="3l4cqjgbemz2c", sign=KEY.sign)
    keys = [k for k, _ in walk_mst(repo.blocks.__getitem__, repo.data_cid.cid_bytes)]
    assert keys == sorted(k.encode() for k in records)


def test_walk_yields_the_record_cids() -> None:
    repo = build_repo(DID, make_records(200), rev="3l4cqjgbemz2c", sign=KEY.sign)
    walked = dict(walk_mst(repo.blocks.__getitem__, repo.data_cid.cid_bytes))
    assert walked == {k.encode(): c.cid_bytes for k, c in repo.record_cids.items()}


def test_a_collection_filter_skips_other_subtrees_unfetched() -> None:
    records = make_records(3000, seed=7)
    repo = build_repo(DID, records, rev="3l4cqjgbemz2c", sign=KEY.sign)
    full, filtered = Blocks(repo.blocks), Blocks(repo.blocks)
    all_keys = list(walk_mst(full.fetch, repo.data_cid.cid_bytes))
    wanted = KeyRanges(["app.bsky.actor.profile", "com.example.bookmark"])
    some = [k for k, _ in walk_mst(filtered.fetch, repo.data_cid.cid_bytes, wanted=wanted)]
    assert some == [
        k
        for k, _ in all_keys
        if k.split(b"/")[0] in (b"app.bsky.actor.profile", b"com.example.bookmark")
    ]
    assert filtered.fetched < full.fetched / 2


def test_key_ranges_do_not_confuse_prefix_collections() -> None:
    ranges = KeyRanges(["app.bsky.feed.post"])
    assert ranges.contains(b"app.bsky.feed.post/3k")
    assert not ranges.contains(b"app.bsky.feed.postgate/3k")
    assert not ranges.contains(b"app.bsky.feed.pos/3k")
    assert not ranges.overlaps(b"app.bsky.feed.post0", None)
    assert ranges.overlaps(None, b"app.bsky.feed.post/3")


def test_an_empty_repo_has_no_keys() -> None:
    blocks = Blocks()
    root = blocks.put({"e": [], "l": None})
    assert list(walk_mst(blocks.fetch, root.cid_bytes)) == []


def test_a_root_that_only_points_down_is_malformed() -> None:
    blocks = Blocks()
    (key,) = keys_on_layer(0, 1)
    leaf = blocks.put({"e": [entry(key)], "l": None})
    root = blocks.put({"e": [], "l": leaf})
    with pytest.raises(MalformedMst, match="root is an empty node"):
        list(walk_mst(blocks.fetch, root.cid_bytes))


def test_keys_out_of_order_in_a_node_are_malformed() -> None:
    blocks = Blocks()
    a, b = keys_on_layer(0, 2)
    root = blocks.put({"e": [entry(b), entry(a)], "l": None})
    with pytest.raises(MalformedMst, match="out of order"):
        list(walk_mst(blocks.fetch, root.cid_bytes))


def test_a_subtree_key_outside_its_parent_bounds_is_malformed() -> None:
    blocks = Blocks()
    (top,) = keys_on_layer(1, 1)
    (low,) = [k for k in keys_on_layer(0, 50) if k > top][:1]
    left = blocks.put({"e": [entry(low)], "l": None})  # belongs right of `top`, placed left
    root = blocks.put({"e": [entry(top)], "l": left})
    with pytest.raises(MalformedMst, match="out of order"):
        list(walk_mst(blocks.fetch, root.cid_bytes))


def test_a_key_on_the_wrong_layer_is_malformed_only_when_layers_are_checked() -> None:
    blocks = Blocks()
    low, top = keys_on_layer(1, 2)  # `low` belongs on layer 1, not in a layer-0 child
    left = blocks.put({"e": [entry(low)], "l": None})
    root = blocks.put({"e": [entry(top)], "l": left})
    with pytest.raises(MalformedMst, match="wrong layer"):
        list(walk_mst(blocks.fetch, root.cid_bytes))
    assert len(list(walk_mst(blocks.fetch, root.cid_bytes, check_layers=False))) == 2


def test_a_layer_zero_node_with_a_subtree_is_malformed() -> None:
    blocks = Blocks()
    a, b = keys_on_layer(0, 2)
    below = blocks.put({"e": [entry(b)], "l": None})
    root = blocks.put({"e": [entry(a, t=below)], "l": None})
    with pytest.raises(MalformedMst, match="on layer 0 points to a subtree"):
        list(walk_mst(blocks.fetch, root.cid_bytes))


def test_an_empty_inner_node_is_malformed() -> None:
    blocks = Blocks()
    (top,) = keys_on_layer(1, 1)
    empty = blocks.put({"e": [], "l": None})
    root = blocks.put({"e": [entry(top)], "l": empty})
    with pytest.raises(MalformedMst, match="is empty"):
        list(walk_mst(blocks.fetch, root.cid_bytes))


@pytest.mark.parametrize(
    "node",
    [
        {"e": []},
        {"e": "x", "l": None},
        {"e": [{"k": b"a/b", "p": 0, "v": None}], "l": None},
        {"e": [{"k": "app.x/y", "p": 0, "t": None, "v": b"\x01"}], "l": None},
        {"e": [{"k": b"app.x/y", "p": 5, "t": None, "v": b"\x01"}], "l": None},
        {"e": [{"k": b"no-slash-here", "p": 0, "t": None, "v": b"\x01"}], "l": None},
        [1, 2],
    ],
)
def test_a_node_of_the_wrong_shape_is_malformed(node: Any) -> None:
    blocks = Blocks()
    root = blocks.put(node)
    with pytest.raises(MalformedMst):
        list(walk_mst(blocks.fetch, root.cid_bytes, check_layers=False))


def test_a_missing_subtree_raises_what_fetch_raises() -> None:
    repo = build_repo(DID, make_records(500), rev="3l4cqjgbemz2c", sign=KEY.sign)
    blocks = Blocks(repo.blocks)
    root_node = cbrrr.decode_dag_cbor(blocks[repo.data_cid.cid_bytes])
    del blocks[root_node["l"].cid_bytes]
    with pytest.raises(TruncatedRepo):
        list(walk_mst(blocks.fetch, repo.data_cid.cid_bytes))


_NSID_PARTS = st.sampled_from(["app", "bsky", "feed", "post", "like", "a", "b0", "x-y"])
_NSIDS = st.lists(_NSID_PARTS, min_size=1, max_size=4).map(".".join)


@given(
    collections=st.lists(_NSIDS, max_size=5),
    key=st.tuples(_NSIDS, st.sampled_from(["/", "0", ".", "/3lx", ""]), st.text(max_size=3)),
)
def test_key_ranges_hold_exactly_the_keys_of_their_collections(
    collections: list[str], key: tuple[str, str, str]
) -> None:
    raw = "".join(key).encode()
    expected = any(raw.startswith(c.encode() + b"/") for c in collections)
    assert KeyRanges(collections).contains(raw) == expected
