from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.truth import expected_repos, record_time
from bsky_backfill.fakenet.world import World

NOW = datetime(2026, 11, 29, tzinfo=UTC)
TID = "3l4cqjgbemz2c"  # 2024-09 or so: its own moment


@pytest.fixture(scope="module")
def world() -> World:
    return World(PopulationSpec(seed=5, accounts=300, hosts=3, deactivated=0.05, deleted=0.05))


def test_record_time_prefers_created_at_then_the_tid() -> None:
    assert record_time({"createdAt": "2025-01-02T03:04:05Z"}, TID, NOW) == datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    tid_moment = record_time({}, TID, NOW)
    assert tid_moment is not None
    assert record_time({"createdAt": "yesterday"}, TID, NOW) == tid_moment
    assert record_time({"createdAt": "2030-01-01T00:00:00Z"}, TID, NOW) == tid_moment
    assert record_time({"createdAt": 5}, "self", NOW) is None


def test_statuses_map_to_the_dataset_vocabulary(world: World) -> None:
    dids = [a.did for a in world] + ["did:plc:neverregistered2345abcde", "not-a-did"]
    truth = expected_repos(world, dids, fetched_at=NOW)
    assert truth["not-a-did"].status == "invalid_did"
    assert truth["did:plc:neverregistered2345abcde"].status == "not_found"
    by_status = {a.status: truth[a.did].status for a in world}
    assert by_status["active"] == "complete"
    assert by_status["deactivated"] == "deactivated"
    assert by_status["deleted"] == "not_found"


def test_without_filters_every_record_is_expected(world: World) -> None:
    account = next(a for a in world if a.status == "active" and a.seed.record_count > 10)
    truth = expected_repos(world, [account.did], fetched_at=NOW)[account.did]
    assert len(truth.records) == account.seed.record_count
    assert truth.rev == account.rev


def test_collections_and_window_select_exactly(world: World) -> None:
    account = next(a for a in world if a.status == "active" and a.seed.record_count > 50)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    truth = expected_repos(
        world,
        [account.did],
        collections=["app.bsky.feed.like"],
        start=start,
        end=end,
        fetched_at=NOW,
    )[account.did]
    inside = set()
    for key, value in account.current_records().items():
        collection, rkey = key.split("/")
        moment = record_time(value, rkey, NOW)
        if collection == "app.bsky.feed.like" and moment is not None and start <= moment < end:
            inside.add((collection, rkey))
    assert inside
    assert set(truth.records) == inside


def test_failing_dids_are_expected_failed(world: World) -> None:
    account = next(a for a in world if a.status == "active")
    truth = expected_repos(world, [account.did], fetched_at=NOW, failing={account.did})
    assert truth[account.did].status == "failed"
    assert truth[account.did].records == {}
