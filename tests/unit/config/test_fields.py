"""Single-value types: window bounds, private hosts, URL and S3 normalisation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from bsky_backfill.config.fields import is_private_host, parse_window_bound, sorted_unique


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2025-01-02", False, datetime(2025, 1, 2, tzinfo=UTC)),
        ("2025-01-02", True, datetime(2025, 1, 3, tzinfo=UTC)),
        ("2024-02-29", True, datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-12-31", True, datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-02T03:04:05Z", True, datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02T00:00:00-05:00", False, datetime(2025, 1, 2, 5, tzinfo=UTC)),
        (" 2025-01-02 ", False, datetime(2025, 1, 2, tzinfo=UTC)),
        (date(2025, 1, 2), True, datetime(2025, 1, 3, tzinfo=UTC)),
        (
            datetime(2025, 1, 2, 12, tzinfo=timezone(timedelta(hours=1))),
            True,
            datetime(2025, 1, 2, 11, tzinfo=UTC),
        ),
    ],
)
def test_window_bounds_are_utc_instants(value: object, end: bool, expected: datetime) -> None:
    parsed = parse_window_bound(value, end=end)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2025-01-02T00:00:00", "time zone"),
        (datetime(2025, 1, 2), "time zone"),
        ("2025-1-2", "RFC 3339"),
        ("2025-01-02 00:00:00Z", "RFC 3339"),
        ("2024-09-28-00:00:00", "legacy form"),
        ("2025-02-29", "calendar date"),
        (20250102, "in quotes"),
        (None, "in quotes"),
    ],
)
def test_bad_window_bounds_explain_the_fix(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window_bound(value, end=False)


def test_the_last_day_cannot_be_an_end_date() -> None:
    assert parse_window_bound("9999-12-30", end=True) == datetime(9999, 12, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="last representable day"):
        parse_window_bound("9999-12-31", end=True)


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("http://127.0.0.1:2582", True),
        ("http://localhost", True),
        ("http://pds.localhost:8080", True),
        ("http://[::1]:3000", True),
        ("http://192.168.1.4", True),
        ("http://172.16.0.1", True),
        ("http://169.254.169.254", True),
        ("https://plc.directory", False),
        ("https://8.8.8.8", False),
        ("https://bsky.social", False),
    ],
)
def test_private_hosts_are_the_loopback_private_and_link_local_ones(
    url: str, private: bool
) -> None:
    assert is_private_host(url) is private


def test_sorted_unique_refuses_an_empty_list() -> None:
    assert sorted_unique(("b", "a", "b")) == ("a", "b")
    with pytest.raises(ValueError, match="must not be empty"):
        sorted_unique(())
