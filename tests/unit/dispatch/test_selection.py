"""Selecting records from a dataset: collections, window, URI list, and a sample that is
the same on every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.config.schema import TimeRange
from bsky_backfill.dispatch.config import RecordSelection, Sample, UriList
from bsky_backfill.dispatch.selection import in_sample, read_uri_list, select_records
from bsky_backfill.errors import ConfigError
from tests.unit.dispatch.conftest import LIKE, POST, record

URIS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:/.", min_size=1, max_size=60)


def uris_of(dataset: Path, spec: RecordSelection, uris: frozenset[str] | None = None) -> list[str]:
    return [r.uri for chunk in select_records(dataset, spec, uris, chunk_rows=7) for r in chunk]


def test_collections_pick_partitions(dataset: Path) -> None:
    assert len(uris_of(dataset, RecordSelection())) == 40
    assert len(uris_of(dataset, RecordSelection(collections=(LIKE,)))) == 10
    assert len(uris_of(dataset, RecordSelection(collections=(LIKE, POST)))) == 50


def test_the_window_is_half_open(dataset: Path) -> None:
    window = TimeRange(start_date="2025-01-03", end_date="2025-01-05")  # [day 2, day 5)
    selected = uris_of(dataset, RecordSelection(time_range=window))
    assert selected == [record(i).uri for i in (2, 3, 4)]


def test_a_uri_list_keeps_only_listed_records(dataset: Path, tmp_path: Path) -> None:
    listed = tmp_path / "feed_posts.txt"
    listed.write_text(f"{record(5).uri}\n# a comment\n{record(9).uri}\nat://elsewhere\n")
    uris = read_uri_list(UriList(path=listed))
    assert uris_of(dataset, RecordSelection(), uris) == [record(5).uri, record(9).uri]


def test_a_missing_uri_list_or_dataset_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        read_uri_list(UriList(path=tmp_path / "nope.txt"))
    assert caught.value.key == "dispatch.select.uris.path"
    with pytest.raises(ConfigError, match="no dataset") as caught:
        uris_of(tmp_path, RecordSelection())
    assert caught.value.key == "dispatch.dataset"


def test_items_carry_uri_cid_and_the_record_as_json(dataset: Path) -> None:
    first = next(select_records(dataset, RecordSelection()))[0]
    assert first.item() == {
        "uri": record(0).uri,
        "cid": record(0).cid,
        "did": record(0).did,
        "collection": POST,
        "rkey": record(0).rkey,
        "created_at": "2025-01-01T00:00:00.000000Z",
        "record": {"$type": POST, "text": "post 0", "createdAt": "x"},
    }


def test_a_sample_is_the_same_on_every_run_and_about_its_size(dataset: Path) -> None:
    spec = RecordSelection(sample=Sample(proportion=0.5, seed=3))
    first, second = uris_of(dataset, spec), uris_of(dataset, spec)
    assert first == second
    assert 10 <= len(first) <= 30


@given(uri=URIS, seed=st.integers(), p=st.floats(0.001, 1.0))
def test_sampling_is_a_pure_function_of_seed_and_uri(uri: str, seed: int, p: float) -> None:
    sample = Sample(proportion=p, seed=seed)
    assert in_sample(uri, sample) == in_sample(uri, Sample(proportion=p, seed=seed))


@given(uri=URIS, seed=st.integers(), low=st.floats(0.001, 1.0), high=st.floats(0.001, 1.0))
def test_a_larger_proportion_keeps_every_record_a_smaller_one_keeps(
    uri: str, seed: int, low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    if in_sample(uri, Sample(proportion=low, seed=seed)):
        assert in_sample(uri, Sample(proportion=high, seed=seed))


@given(seed=st.integers(0, 2**32), p=st.sampled_from([0.1, 0.5, 0.9]))
def test_the_sampled_share_is_close_to_the_proportion(seed: int, p: float) -> None:
    uris = [f"at://did:plc:x/app.bsky.feed.post/{i}" for i in range(2000)]
    share = sum(in_sample(u, Sample(proportion=p, seed=seed)) for u in uris) / len(uris)
    assert abs(share - p) < 0.06


def test_proportion_one_keeps_everything() -> None:
    assert all(in_sample(f"at://{i}", Sample(proportion=1.0, seed=i)) for i in range(500))
