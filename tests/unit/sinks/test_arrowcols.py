"""The Parquet sink's C helpers (``sinks/_arrowcols.c``): rows to columns as ``zip`` makes
them, datetimes to Arrow timestamps as pyarrow makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.sinks import parquet
from bsky_backfill.sinks.parquet import TIMESTAMP, _column
from tests.support import require


def compiled() -> ModuleType:
    """The C helpers; skips (fails under CI) where they were not compiled."""
    require(parquet.arrowcols is not None, "the C helpers (pip install -e . with a C compiler)")
    return parquet.arrowcols


_values = st.none() | st.integers() | st.text(max_size=5) | st.datetimes()


@given(st.integers(0, 6).flatmap(lambda w: st.lists(st.tuples(*[_values] * w), max_size=30)))
def test_rows_become_their_columns(rows: list[tuple[object, ...]]) -> None:
    arrowcols = compiled()
    width = len(rows[0]) if rows else 3
    assert arrowcols.columns(rows, width) == [[row[j] for row in rows] for j in range(width)]


def test_rows_that_are_not_tuples_of_the_width_are_a_type_error() -> None:
    arrowcols = compiled()
    with pytest.raises(TypeError, match="row 1"):
        arrowcols.columns([(1, 2), (1, 2, 3)], 2)
    with pytest.raises(TypeError, match="row 0"):
        arrowcols.columns([[1, 2]], 2)
    with pytest.raises(ValueError, match="width"):
        arrowcols.columns([], -1)


_utc = st.datetimes(timezones=st.just(UTC))


@given(st.lists(st.none() | _utc, max_size=40))
def test_utc_datetimes_and_nulls_convert_as_pyarrow_converts_them(
    values: list[datetime | None],
) -> None:
    arrowcols = compiled()
    assert arrowcols.micros(values) is not None
    column = _column(values, TIMESTAMP)
    assert column.equals(pa.array(values, TIMESTAMP))
    assert column.to_pylist() == values


@given(st.lists(_utc, max_size=5), st.sampled_from([timezone(timedelta(hours=2)), None]))
def test_other_time_zones_and_naive_datetimes_are_left_to_pyarrow(
    values: list[datetime], zone: timezone | None
) -> None:
    arrowcols = compiled()
    other = [*values, datetime(2024, 1, 2, 3, tzinfo=zone)]
    assert arrowcols.micros(other) is None
    assert _column(other, TIMESTAMP).equals(pa.array(other, TIMESTAMP))


def test_the_extremes_of_datetime_convert() -> None:
    values = [datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
    assert _column(values, TIMESTAMP).equals(pa.array(values, TIMESTAMP))


def test_a_datetime_subclass_is_left_to_pyarrow() -> None:
    class Shifted(datetime):
        def utcoffset(self) -> timedelta:
            return timedelta(hours=1)

    value = Shifted(2020, 1, 1, tzinfo=UTC)
    arrowcols = compiled()
    assert arrowcols.micros([value]) is None
    assert _column([value], TIMESTAMP).equals(pa.array([value], TIMESTAMP))


@given(st.lists(st.none() | st.text(), max_size=40))
def test_strings_and_nulls_convert_as_pyarrow_converts_them(values: list[str | None]) -> None:
    arrowcols = compiled()
    assert arrowcols.strings(values, pa.allocate_buffer) is not None
    column = _column(values, pa.string())
    column.validate(full=True)
    assert column.equals(pa.array(values, pa.string()))
    assert column.to_pylist() == values


def test_strings_it_cannot_copy_are_left_to_pyarrow() -> None:
    arrowcols = compiled()

    class Name(str):
        pass

    for other in (["a", 1], ["a", b"b"], ["\ud800"], [Name("a")]):
        assert arrowcols.strings(other, pa.allocate_buffer) is None
    assert _column(["a", Name("b")], pa.string()).to_pylist() == ["a", "b"]
    with pytest.raises(pa.ArrowTypeError):  # pyarrow's own error, as without the helper
        _column(["a", 1], pa.string())


def test_strings_survive_an_allocator_that_changes_the_list() -> None:
    arrowcols = compiled()
    values: list[str | None] = ["a", "bb", None]

    def allocate(size: int) -> pa.Buffer:
        values.clear()  # the C code reads its own copy
        return pa.allocate_buffer(size)

    texts = arrowcols.strings(values, allocate)
    assert texts is not None
    offsets, data, validity, nulls = texts
    column = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, data], null_count=nulls)
    assert column.to_pylist() == ["a", "bb", None]
