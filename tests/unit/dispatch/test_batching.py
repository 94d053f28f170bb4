"""Cutting selected records into batches: acknowledged ones skipped, sizes, the cap."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bsky_backfill.dispatch.batching import unsent_batches
from bsky_backfill.dispatch.selection import SelectedRecord
from tests.unit.dispatch.conftest import record


def selected(i: int) -> SelectedRecord:
    row = record(i)
    return SelectedRecord(
        row.uri, row.cid, row.did, row.collection, row.rkey, row.created_at, row.record
    )


def chunks(*sizes: int) -> list[list[SelectedRecord]]:
    out, start = [], 0
    for size in sizes:
        out.append([selected(i) for i in range(start, start + size)])
        start += size
    return out


async def batches_of(
    parts: list[list[SelectedRecord]],
    done: set[tuple[str, str]] | None = None,
    **options: int | None,
) -> tuple[list[list[int]], int]:
    skipped = 0

    async def acknowledged(keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(keys) & (done or set())

    def count(n: int) -> None:
        nonlocal skipped
        skipped += n

    numbers = {selected(i).uri: i for i in range(100)}
    found = [
        [numbers[r.uri] for r in batch]
        async for batch in unsent_batches(
            iter(parts),
            acknowledged,
            on_skipped=count,
            **options,  # type: ignore[arg-type]
        )
    ]
    return found, skipped


async def test_batches_cross_chunk_boundaries() -> None:
    found, _ = await batches_of(chunks(3, 0, 4, 3), size=4)
    assert found == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_acknowledged_records_are_skipped_and_counted() -> None:
    done = {selected(i).key for i in (0, 2, 3, 7)}
    found, skipped = await batches_of(chunks(5, 5), done, size=3)
    assert found == [[1, 4, 5], [6, 8, 9]]
    assert skipped == 4


@pytest.mark.parametrize(("limit", "expected"), [(1, [[0]]), (5, [[0, 1, 2], [3, 4]])])
async def test_the_limit_counts_only_new_records(limit: int, expected: list[list[int]]) -> None:
    done = {selected(i).key for i in range(3)}
    shifted = [[n + 3 for n in batch] for batch in expected]
    found, skipped = await batches_of(chunks(4, 6), done, size=3, limit=limit)
    assert found == shifted
    assert skipped == 3


async def test_nothing_new_gives_no_batch() -> None:
    done = {selected(i).key for i in range(6)}
    assert await batches_of(chunks(6), done, size=2) == ([], 6)


async def test_a_zero_size_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await batches_of(chunks(1), size=0)
