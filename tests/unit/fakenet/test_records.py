from __future__ import annotations

import random
from collections import Counter

from bsky_backfill.atproto.syntax import (
    is_valid_nsid,
    is_valid_tid,
    parse_datetime,
    tid_to_datetime,
)
from bsky_backfill.fakenet.records import RecordMix, generate_records


def test_likes_are_the_majority_and_there_is_one_profile() -> None:
    records = generate_records(5000, random.Random(1))
    counts = Counter(key.split("/")[0] for key in records)
    assert counts.most_common(1)[0][0] == "app.bsky.feed.like"
    assert counts["app.bsky.actor.profile"] == 1
    assert len(records) == 5000


def test_keys_are_valid_and_tids_match_created_at_without_anomalies() -> None:
    clean = RecordMix(skewed=0, missing=0, malformed=0, future=0)
    for key, value in generate_records(500, random.Random(2), clean).items():
        collection, rkey = key.split("/")
        assert is_valid_nsid(collection)
        if rkey == "self":
            continue
        assert is_valid_tid(rkey)
        drift = tid_to_datetime(rkey) - parse_datetime(value["createdAt"])
        assert abs(drift.total_seconds()) < 0.001


def test_generation_is_deterministic() -> None:
    assert generate_records(100, random.Random(3)) == generate_records(100, random.Random(3))


def test_a_share_of_records_has_a_missing_malformed_or_future_created_at() -> None:
    records = generate_records(20_000, random.Random(4))
    missing = sum("createdAt" not in v for v in records.values())
    not_text = sum(not isinstance(v.get("createdAt", ""), str) for v in records.values())
    future = sum(str(v.get("createdAt", "")) > "2026-11-02" for v in records.values())
    assert 100 < missing < 400  # 1 % of 20k
    assert not_text > 0
    assert 40 < future < 200  # 0.5 %
