from __future__ import annotations

from collections import Counter

import pytest

from bsky_backfill.atproto.syntax import is_valid_did, is_valid_handle
from bsky_backfill.fakenet.population import PopulationSpec, account_seed

SPEC = PopulationSpec(seed=3, accounts=5000, hosts=10, huge=(30_000,))


def test_accounts_are_a_pure_function_of_seed_and_index() -> None:
    assert account_seed(SPEC, 17) == account_seed(SPEC, 17)
    assert account_seed(SPEC, 17).did != account_seed(PopulationSpec(seed=4), 17).did


def test_dids_and_handles_are_valid_and_unique() -> None:
    seeds = [account_seed(SPEC, i) for i in range(SPEC.total_accounts)]
    assert all(is_valid_did(s.did) and is_valid_handle(s.handle) for s in seeds)
    assert len({s.did for s in seeds}) == len(seeds)


def test_sizes_are_heavy_tailed_and_huge_accounts_come_last() -> None:
    counts = sorted(account_seed(SPEC, i).record_count for i in range(SPEC.accounts))
    assert counts[len(counts) // 2] < 50
    assert counts[-1] > 2_000
    assert account_seed(SPEC, SPEC.accounts).record_count == 30_000


def test_statuses_and_curves_follow_their_shares() -> None:
    seeds = [account_seed(SPEC, i) for i in range(SPEC.accounts)]
    statuses = Counter(s.status for s in seeds)
    assert statuses["active"] > 0.95 * len(seeds)
    assert {"deactivated", "takendown", "suspended", "deleted", "tombstoned"} <= set(statuses)
    p256 = sum(s.curve == "p256" for s in seeds)
    assert 0.10 * len(seeds) < p256 < 0.20 * len(seeds)


def test_hosts_have_a_long_tail() -> None:
    per_host = Counter(account_seed(SPEC, i).host for i in range(SPEC.accounts))
    assert set(per_host) == set(range(SPEC.hosts))
    assert per_host[0] > 3 * per_host[SPEC.hosts - 1]


def test_did_web_accounts_live_on_their_own_host() -> None:
    spec = PopulationSpec(accounts=20, hosts=4, web_share=1.0)
    names = [f"127.0.0.1%3A{9000 + h}" for h in range(4)]
    webs = [account_seed(spec, i, names) for i in range(spec.accounts)]
    assert [s.did for s in webs[:4]] == [f"did:web:{n}" for n in names]
    assert [s.host for s in webs[:4]] == [0, 1, 2, 3]
    assert all(s.did.startswith("did:plc:") for s in webs[4:])


def test_records_match_the_count_and_are_reproducible() -> None:
    seed = next(
        account_seed(SPEC, i) for i in range(100) if account_seed(SPEC, i).record_count > 20
    )
    assert len(seed.records()) == seed.record_count
    assert seed.records() == seed.records()


def test_an_index_outside_the_population_is_an_error() -> None:
    with pytest.raises(IndexError):
        account_seed(SPEC, SPEC.total_accounts)
