"""Row values: the column lists match the row models, timestamps in one RFC 3339 form."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.core.models import RecordRow, RepoResult, RepoRow
from bsky_backfill.core.spill import SpilledRows
from bsky_backfill.sinks.rows import (
    RECORD_COLUMNS,
    REPO_COLUMNS,
    group_by_collection,
    record_chunks,
    record_values,
    repo_values,
    rfc3339,
)
from tests.support.sinks import repo_result


def test_columns_are_exactly_the_model_fields() -> None:
    assert RecordRow._fields == RECORD_COLUMNS
    assert sorted(REPO_COLUMNS) == sorted(f.name for f in fields(RepoRow))


def test_values_follow_the_column_order() -> None:
    result = repo_result("did:plc:a", n=2)
    record = dict(zip(RECORD_COLUMNS, record_values(result.records[0]), strict=True))
    assert record["uri"] == result.records[0].uri
    assert record["fetched_at"] == "2025-01-02T00:00:00.000000Z"
    repo = dict(zip(REPO_COLUMNS, repo_values(result.repo), strict=True))
    assert repo["status"] == "complete"
    assert repo["records_by_collection"] == '{"app.bsky.feed.like":1,"app.bsky.feed.post":1}'


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (None, None),
        (datetime(2025, 1, 2, 3, 4, 5, 678000, UTC), "2025-01-02T03:04:05.678000Z"),
        (datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05.000000Z"),
        (
            datetime(2025, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            "2025-01-01T23:00:00.000000Z",
        ),
    ],
)
def test_rfc3339_is_utc_with_microseconds(moment: datetime | None, text: str | None) -> None:
    assert rfc3339(moment) == text


@given(st.lists(st.sampled_from(["a.b.c", "a.b.d", "x.y.z"]), max_size=40))
def test_records_are_grouped_by_collection_in_input_order(collections: list[str]) -> None:
    template = repo_result("did:plc:grouped", n=1).records[0]
    rows = [template._replace(collection=c, rkey=str(i)) for i, c in enumerate(collections)]
    expected: dict[str, list[RecordRow]] = {}
    for row in rows:
        expected.setdefault(row.collection, []).append(row)
    grouped = group_by_collection(rows)
    assert grouped == expected
    assert list(grouped) == list(expected)  # collections in order of first appearance


def test_record_chunks_hold_the_rows_in_memory_together_then_each_spilled_chunk() -> None:
    small, other = repo_result("did:plc:a", n=3), repo_result("did:plc:b", n=2)
    spilled = SpilledRows()
    huge_rows = repo_result("did:plc:c", n=4).records
    spilled.append(huge_rows[:2])
    spilled.append(huge_rows[2:])
    huge = RepoResult(repo_result("did:plc:c").repo, spilled)
    try:
        chunks = [list(c) for c in record_chunks([small, huge, other])]
    finally:
        spilled.close()
    assert chunks == [[*small.records, *other.records], list(huge_rows[:2]), list(huge_rows[2:])]
