"""Hostile input to the XRPC client's pure parts: rate-limit headers and error answers."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from bsky_backfill.atproto.xrpc import RateLimitInfo, map_response_error
from bsky_backfill.errors import (
    BackfillError,
    HostUnavailable,
    RateLimited,
    RepoUnavailable,
    RetryableError,
    XrpcError,
)

HEADER_NAMES = [
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Retry-After",
]
# Text that looks almost right: digits in other scripts, huge numbers, dates, separators.
NEAR_MISSES = st.sampled_from(
    [
        "",
        " ",
        "-1",
        "1e9",
        "inf",
        "NaN",
        "٣٠٠٠",  # Arabic-Indic digits: int() would take them
        "9" * 5000,  # int() refuses over 4300 digits
        "3000;w=",
        ";w=300",
        '"3000;w=300',
        "3000;w=300,",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Wed, 31 Feb 99999 07:28:00 GMT",
        "Mon, 01 Jan 0001 00:00:00 +2359",
        "1 Jan 0 0:0:0",
        "0.5",
        "1.",
    ]
)
HEADER_VALUES = st.text() | NEAR_MISSES | st.integers().map(str)
NOW = st.floats(min_value=0, max_value=4e9)


@given(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES), NOW)
@example({"RateLimit-Reset": "9" * 5000, "Retry-After": "9" * 5000}, 0.0)
@example({"Retry-After": "Mon, 01 Jan 0001 00:00:00 +2359"}, 0.0)
def test_header_parsing_never_raises(headers: dict[str, str], now: float) -> None:
    info = RateLimitInfo.from_headers(CIMultiDict(headers), now=now)
    for value in (info.limit, info.remaining, info.policy_limit):
        assert value is None or (isinstance(value, int) and value >= 0)
    for seconds in (info.reset_at, info.policy_window, info.retry_after):
        assert seconds is None or seconds >= 0
    delay = info.retry_delay(now)
    assert delay is None or delay >= 0


@given(
    limit=st.integers(0, 10**9),
    remaining=st.integers(0, 10**9),
    reset_at=st.integers(0, 10**10),
    window=st.integers(1, 86_400),
    retry_after=st.integers(0, 10**6),
    case=st.sampled_from([str.lower, str.upper, str.title]),
)
def test_well_formed_headers_round_trip(
    limit: int,
    remaining: int,
    reset_at: int,
    window: int,
    retry_after: int,
    case: Callable[[str], str],
) -> None:
    values = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": f" {remaining} ",
        "RateLimit-Reset": str(reset_at),
        "RateLimit-Policy": f"{limit};w={window}",
        "Retry-After": str(retry_after),
    }
    headers = CIMultiDict({case(name): value for name, value in values.items()})
    info = RateLimitInfo.from_headers(headers, now=0.0)
    assert info == RateLimitInfo(
        limit=limit,
        remaining=remaining,
        reset_at=float(reset_at),
        policy_limit=limit,
        policy_window=float(window),
        retry_after=float(retry_after),
    )


ERROR_NAMES = st.sampled_from(
    [
        "RepoNotFound",
        "RepoTakendown",
        "RepoDeactivated",
        "RepoSuspended",
        "RateLimitExceeded",
        "InvalidRequest",
        "",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
ERROR_DOCUMENTS = st.fixed_dictionaries(
    {}, optional={"error": ERROR_NAMES | JSON, "message": st.text() | JSON}
)
BODIES = (
    st.binary(max_size=512)
    | (ERROR_DOCUMENTS | JSON).map(lambda doc: json.dumps(doc).encode())
    | st.just(b"[" * 100_000)
)
ERROR_STATUSES = st.integers(100, 199) | st.integers(300, 599)


@given(ERROR_STATUSES, BODIES, NOW)
def test_error_answers_map_only_to_backfill_errors(status: int, body: bytes, now: float) -> None:
    rate_limit = RateLimitInfo(reset_at=now + 60)
    error = map_response_error(
        status, body, rate_limit, now=now, did="did:plc:x", host="h", url="u"
    )
    assert isinstance(error, BackfillError)
    assert (error.did, error.host, error.url) == ("did:plc:x", "h", "u")
    if status == 429:
        assert isinstance(error, RateLimited)
        assert error.retry_after == 60
    elif status >= 500:
        assert isinstance(error, RetryableError)
    if isinstance(error, RepoUnavailable):
        assert 400 <= status < 500
    if isinstance(error, XrpcError):
        assert error.status == status
    assert len(error.message) < 500


@given(st.integers(500, 599), ERROR_DOCUMENTS)
def test_a_5xx_is_never_a_final_answer(status: int, document: dict[str, object]) -> None:
    error = map_response_error(status, json.dumps(document).encode(), RateLimitInfo(), now=0.0)
    assert isinstance(error, HostUnavailable | RateLimited)
