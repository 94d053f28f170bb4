"""cut_shards: every pending DID in exactly one shard, no shard over its size."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.distributed.shards import cut_shards

hosts = st.dictionaries(st.from_regex(r"[a-z]{1,8}\.example", fullmatch=True), st.integers(1, 500))


@given(pending=hosts, size=st.integers(1, 300))
def test_shards_cover_every_pending_did_once_within_their_size(
    pending: dict[str, int], size: int
) -> None:
    shards = cut_shards(pending, size)
    covered: Counter[str] = Counter()
    for shard in shards:
        assert 0 < sum(shard.values()) <= size
        assert all(budget > 0 for budget in shard.values())
        covered.update(shard)
    assert covered == Counter(pending)
    assert len(shards) == -(-sum(pending.values()) // size)  # packed: no needless task


def test_the_busiest_host_comes_first_and_small_hosts_share_a_shard() -> None:
    shards = cut_shards({"tail-a": 2, "big": 25, "tail-b": 1}, 10)
    assert shards == [{"big": 10}, {"big": 10}, {"big": 5, "tail-a": 2, "tail-b": 1}]


def test_nothing_pending_is_no_shard_and_a_size_below_one_is_refused() -> None:
    assert cut_shards({}, 10) == []
    with pytest.raises(ValueError, match="shard_size"):
        cut_shards({"a": 1}, 0)
