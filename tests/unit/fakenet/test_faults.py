from __future__ import annotations

import random
from collections import Counter

import pytest

from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.errors import BadSignature, CorruptBlock, TruncatedRepo
from bsky_backfill.fakenet.faults import (
    FaultPlan,
    FaultSpec,
    bad_signature,
    corrupt_record,
    corrupt_tree_root,
    truncate_at_block,
)
from tests.support.repos import KEY, make_repo


def read_all(car: bytes, key: str = KEY.did_key) -> int:
    with read_repo(car, signing_key=key) as repo:
        return sum(1 for _ in repo.records)


def test_a_truncated_car_is_truncation_for_the_reader() -> None:
    export = make_repo(100)
    for fraction in (0.0, 0.5, 0.99):
        with pytest.raises(TruncatedRepo):
            read_all(truncate_at_block(export.car, fraction))


def test_a_corrupted_record_fails_the_hash_check() -> None:
    export = make_repo(100)
    for seed in range(5):
        with pytest.raises(CorruptBlock):
            read_all(corrupt_record(export, random.Random(seed)))


def test_a_forged_signature_keeps_hashes_valid_but_fails_the_key() -> None:
    export = make_repo(50)
    forged = bad_signature(export.car, Keypair.from_seed("k256", "impostor"))
    with read_repo(forged, verify="hashes") as repo:
        assert len(list(repo.records)) == 50
    with pytest.raises(BadSignature):
        read_all(forged)


def test_a_corrupted_tree_root_fails_even_a_filtered_read() -> None:
    export = make_repo(100)
    bad = corrupt_tree_root(export.car, random.Random(1))
    only_blocks = ["app.bsky.graph.block"]
    with (
        read_repo(bad, signing_key=KEY.did_key, collections=only_blocks) as repo,
        pytest.raises(CorruptBlock),
    ):
        list(repo.records)


def test_rates_hit_about_their_share_and_are_deterministic() -> None:
    plan = FaultPlan(FaultSpec(seed=1, rates={"error_5xx": 0.1, "truncate": 0.05}))
    decided = [plan.decide(0, n, is_get_repo=True) for n in range(1, 20_001)]
    counts = Counter(decided)
    assert 1_800 < counts["error_5xx"] < 2_200
    assert 800 < counts["truncate"] < 1_200
    assert decided == [plan.decide(0, n, is_get_repo=True) for n in range(1, 20_001)]


def test_car_faults_only_hit_get_repo() -> None:
    plan = FaultPlan(FaultSpec(rates={"corrupt": 1.0}))
    assert plan.decide(0, 1, is_get_repo=True) == "corrupt"
    assert plan.decide(0, 1, is_get_repo=False) is None


def test_a_schedule_names_exact_requests() -> None:
    plan = FaultPlan(FaultSpec(schedule={2: {3: "reset", 4: "stall"}}))
    assert [plan.decide(2, n, is_get_repo=True) for n in range(1, 6)] == [
        None,
        None,
        "reset",
        "stall",
        None,
    ]
    assert plan.decide(1, 3, is_get_repo=True) is None


@pytest.mark.parametrize("rates", [{"nonsense": 0.1}, {"reset": 1.5}, {"reset": 0.6, "stall": 0.6}])
def test_bad_rates_are_refused(rates: dict) -> None:
    with pytest.raises(ValueError, match="fault"):
        FaultSpec(rates=rates)
