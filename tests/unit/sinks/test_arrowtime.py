"""Datetimes to Arrow timestamps in C (``sinks/_arrowtime.c``) equal pyarrow's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.sinks.parquet import TIMESTAMP, _column, arrowtime
from tests.support import require

_utc = st.datetimes(timezones=st.just(UTC))


@given(st.lists(st.none() | _utc, max_size=40))
def test_utc_datetimes_and_nulls_convert_as_pyarrow_converts_them(
    values: list[datetime | None],
) -> None:
    require(arrowtime is not None, "the C timestamp helper (pip install -e . with a C compiler)")
    assert arrowtime.micros(values) is not None
    column = _column(values, TIMESTAMP)
    assert column.equals(pa.array(values, TIMESTAMP))
    assert column.to_pylist() == values


@given(st.lists(_utc, max_size=5), st.sampled_from([timezone(timedelta(hours=2)), None]))
def test_other_time_zones_and_naive_datetimes_are_left_to_pyarrow(
    values: list[datetime], zone: timezone | None
) -> None:
    require(arrowtime is not None, "the C timestamp helper (pip install -e . with a C compiler)")
    other = [*values, datetime(2024, 1, 2, 3, tzinfo=zone)]
    assert arrowtime.micros(other) is None
    assert _column(other, TIMESTAMP).equals(pa.array(other, TIMESTAMP))


def test_the_extremes_of_datetime_convert() -> None:
    values = [datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
    assert _column(values, TIMESTAMP).equals(pa.array(values, TIMESTAMP))


def test_a_datetime_subclass_is_left_to_pyarrow() -> None:
    class Shifted(datetime):
        def utcoffset(self) -> timedelta:
            return timedelta(hours=1)

    value = Shifted(2020, 1, 1, tzinfo=UTC)
    require(arrowtime is not None, "the C timestamp helper (pip install -e . with a C compiler)")
    assert arrowtime.micros([value]) is None
    assert _column([value], TIMESTAMP).equals(pa.array([value], TIMESTAMP))
