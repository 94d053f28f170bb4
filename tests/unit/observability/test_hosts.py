from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.observability.hosts import OTHER, HostLabels


def test_the_first_hosts_are_named_until_the_limit_then_the_rest_are_other() -> None:
    labels = HostLabels(2)
    assert [labels.label(h) for h in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]


def test_ranking_names_the_hosts_with_most_dids_and_keeps_earlier_names() -> None:
    labels = HostLabels(3)
    assert labels.label("plc.directory") == "plc.directory"
    labels.rank({"small": 1, "big": 900, "mid": 40, "tiny": 0})
    assert labels.label("big") == "big"
    assert labels.label("mid") == "mid"
    assert labels.label("plc.directory") == "plc.directory"  # a series never moves
    assert labels.label("small") == OTHER
    assert labels.label("new-after-ranking") == OTHER


def test_ties_are_ranked_by_name_so_every_process_names_the_same_hosts() -> None:
    labels = HostLabels(1)
    labels.rank({"b": 5, "a": 5})
    assert labels.label("a") == "a"
    assert labels.label("b") == OTHER


def test_no_host_is_other() -> None:
    assert HostLabels(5).label(None) == OTHER


@given(
    limit=st.integers(0, 5),
    seen=st.lists(st.sampled_from("abcdefgh"), max_size=30),
    weights=st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 100)),
)
def test_never_more_names_than_the_limit(limit: int, seen: list[str], weights: dict) -> None:
    labels = HostLabels(limit)
    named = {labels.label(host) for host in seen[: len(seen) // 2]}
    labels.rank(weights)
    named |= {labels.label(host) for host in [*seen, *weights]}
    assert len(named - {OTHER}) <= limit
