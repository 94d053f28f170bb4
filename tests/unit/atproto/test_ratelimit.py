from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from bsky_backfill.atproto.ratelimit import RateLimitInfo

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"RateLimit-Policy": '"100;w=60"'}, (100, 60.0)),
        ({"RateLimit-Policy": "100;w=60;comment=x, 3000;w=300"}, (100, 60.0)),
        ({"RateLimit-Policy": "100"}, (100, None)),
        ({"RateLimit-Policy": "100;q=1"}, (100, None)),
        ({"RateLimit-Policy": "100x;w=60"}, (None, None)),
    ],
)
def test_policy_header_forms(
    headers: dict[str, str], expected: tuple[int | None, float | None]
) -> None:
    info = RateLimitInfo.from_headers(headers, now=NOW)
    assert (info.policy_limit, info.policy_window) == expected


def test_retry_after_as_http_date_is_relative_to_now() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert RateLimitInfo.from_headers({"Retry-After": date}, now=NOW).retry_after == 90.0
    past = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert RateLimitInfo.from_headers({"Retry-After": past}, now=NOW).retry_after == 0.0


def test_reset_is_absolute_epoch_seconds() -> None:
    info = RateLimitInfo.from_headers({"RateLimit-Reset": str(int(NOW) + 30)}, now=NOW)
    assert info.reset_at == NOW + 30
    assert info.retry_delay(NOW) == 30


def test_a_small_reset_is_read_as_a_delta() -> None:
    info = RateLimitInfo.from_headers({"RateLimit-Reset": "45"}, now=NOW)
    assert info.reset_at == NOW + 45


def test_retry_after_wins_over_reset() -> None:
    headers = {"RateLimit-Reset": str(int(NOW) + 300), "Retry-After": "7"}
    assert RateLimitInfo.from_headers(headers, now=NOW).retry_delay(NOW) == 7.0
