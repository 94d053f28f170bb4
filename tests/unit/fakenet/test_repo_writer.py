from __future__ import annotations

import random

import cbrrr

from bsky_backfill.fakenet.records import generate_records
from bsky_backfill.fakenet.repo_writer import build_repo, layer_of
from tests.support.repos import DID, KEY


def test_the_same_inputs_give_the_same_bytes() -> None:
    a = build_repo(DID, generate_records(200, random.Random(5)), rev="3l4cqjgbemz2c", sign=KEY.sign)
    b = build_repo(DID, generate_records(200, random.Random(5)), rev="3l4cqjgbemz2c", sign=KEY.sign)
    assert a.car == b.car


def test_the_tree_is_insertion_order_independent() -> None:
    records = generate_records(300, random.Random(9))
    shuffled = dict(random.Random(1).sample(sorted(records.items()), len(records)))
    a = build_repo(DID, records, rev="3l4cqjgbemz2c", sign=KEY.sign)
    b = build_repo(DID, shuffled, rev="3l4cqjgbemz2c", sign=KEY.sign)
    assert a.data_cid == b.data_cid


def test_the_commit_is_version_3_with_a_null_prev() -> None:
    repo = build_repo(
        DID, generate_records(3, random.Random(0)), rev="3l4cqjgbemz2c", sign=KEY.sign
    )
    commit = cbrrr.decode_dag_cbor(repo.blocks[repo.commit_cid.cid_bytes])
    assert commit["version"] == 3
    assert commit["prev"] is None
    assert commit["did"] == DID
    assert len(commit["sig"]) == 64


def test_an_empty_repo_is_one_empty_node() -> None:
    repo = build_repo(DID, {}, rev="3l4cqjgbemz2c", sign=KEY.sign)
    assert cbrrr.decode_dag_cbor(repo.blocks[repo.data_cid.cid_bytes]) == {"e": [], "l": None}


def test_layer_of_counts_two_zero_bits_per_layer() -> None:
    assert layer_of(b"blue") == 1
    assert layer_of(b"app.bsky.feed.post/9adeb165882c") == 8
