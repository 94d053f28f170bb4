"""Property and oracle tests for the syntax validators and TID arithmetic.

The oracles: each fast regex validator must agree with its rule-by-rule explainer (which
mirrors the spec's bullet list); the fromisoformat fast path of datetime parsing must agree
with the spec-rules path; and both must agree with Python's own calendar.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import assume, given
from hypothesis import strategies as st

from bsky_backfill.atproto import syntax
from bsky_backfill.atproto.syntax import (
    datetime_to_tid,
    int_to_tid,
    is_valid_at_uri,
    is_valid_datetime,
    is_valid_did,
    is_valid_handle,
    is_valid_nsid,
    is_valid_record_key,
    is_valid_tid,
    micros_to_tid,
    parse_at_uri,
    parse_datetime,
    parse_did,
    parse_handle,
    parse_nsid,
    parse_record_key,
    parse_tid,
    tid_clock_id,
    tid_timestamp_micros,
    tid_to_datetime,
    tid_to_int,
)
from bsky_backfill.errors import InvalidSyntax

EPOCH = datetime(1970, 1, 1)
LAST_TID_MOMENT = EPOCH + timedelta(microseconds=(1 << 53) - 1)

PAIRS: list[tuple[Callable[[str], object], Callable[[object], bool]]] = [
    (parse_did, is_valid_did),
    (parse_handle, is_valid_handle),
    (parse_nsid, is_valid_nsid),
    (parse_record_key, is_valid_record_key),
    (parse_tid, is_valid_tid),
    (parse_at_uri, is_valid_at_uri),
    (parse_datetime, is_valid_datetime),
]

# Random text almost never gets past the first rule, so also build strings from the
# characters and prefixes the rules are about.
NEAR_MISS_CHARS = "aZk7j2Tz0-._:%~/#? "
near_misses = st.one_of(
    st.text(),
    st.text(alphabet=NEAR_MISS_CHARS, max_size=24),
    st.builds(
        str.__add__,
        st.sampled_from(["did:", "did:plc:", "at://", "at://a.test/", "com.example.", "3j"]),
        st.text(alphabet=NEAR_MISS_CHARS, max_size=24),
    ),
    st.from_regex(r"[a-z0-9-]{1,5}(\.[a-zA-Z0-9-]{0,5}){0,4}", fullmatch=True),
    st.from_regex(r"[2-7a-z]{12,14}", fullmatch=True),
    st.from_regex(
        r"at://(did:plc:[a-z2-7]{1,8}|[a-z0-9]{1,4}\.[a-z0-9]{1,3})"
        r"(/[a-z]{1,3}\.[a-z]{1,3}\.[a-zA-Z0-9]{1,4}(/[a-z0-9.:~_%-]{1,6})?)?/?",
        fullmatch=True,
    ),
    st.from_regex(
        r"([0-9]{4}|0000|0001|9999)-(0[0-9]|1[0-3])-[0-3][0-9]"
        r"T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{0,8})?(Z|z|[+-][0-2][0-9]:[0-6][0-9])?",
        fullmatch=True,
    ),
)


# --- TIDs --------------------------------------------------------------------------------


@given(st.integers(0, (1 << 64) - 1))
def test_int_to_tid_round_trips_over_64_bits(value: int) -> None:
    tid = int_to_tid(value)
    assert is_valid_tid(tid)
    assert tid_to_int(tid) == value


@given(st.from_regex(r"[2-7a-j][2-7a-z]{12}", fullmatch=True))
def test_tid_to_int_round_trips_every_valid_tid(tid: str) -> None:
    assert int_to_tid(tid_to_int(tid)) == tid


@given(st.integers(0, (1 << 63) - 1), st.integers(0, (1 << 63) - 1))
def test_tid_string_order_is_integer_order(a: int, b: int) -> None:
    assert (int_to_tid(a) < int_to_tid(b)) == (a < b)


@given(
    st.datetimes(min_value=EPOCH, max_value=LAST_TID_MOMENT, timezones=st.just(UTC)),
    st.integers(0, 1023),
)
def test_datetime_to_tid_round_trips(moment: datetime, clock_id: int) -> None:
    tid = datetime_to_tid(moment, clock_id)
    assert tid_to_datetime(tid) == moment
    assert tid_clock_id(tid) == clock_id


@given(st.integers(0, (1 << 53) - 1), st.integers(0, 1023))
def test_micros_to_tid_round_trips(micros: int, clock_id: int) -> None:
    tid = micros_to_tid(micros, clock_id)
    assert tid_timestamp_micros(tid) == micros
    assert tid_clock_id(tid) == clock_id


# --- validators --------------------------------------------------------------------------


@given(st.one_of(near_misses, st.none(), st.integers(), st.floats(), st.binary()))
def test_is_valid_never_raises(value: object) -> None:
    for _, is_valid in PAIRS:
        assert isinstance(is_valid(value), bool)


def _reason(parse: Callable[[str], object], text: str) -> str | None:
    """The InvalidSyntax reason, or None if parsed; any other exception propagates."""
    try:
        parse(text)
    except InvalidSyntax as error:
        return error.reason
    return None


@given(near_misses)
def test_parse_raises_only_invalid_syntax_and_exactly_when_invalid(text: str) -> None:
    for parse, is_valid in PAIRS:
        reason = _reason(parse, text)
        if reason is None:
            assert is_valid(text)
        else:
            assert reason
            # The one deliberate gap: valid year-0000 instants that datetime cannot hold.
            assert not is_valid(text) or "year 0000" in reason


@given(near_misses)
def test_regex_validators_agree_with_rule_by_rule_explainers(text: str) -> None:
    oracles = [
        (is_valid_did, syntax._did_problem),
        (is_valid_handle, syntax._handle_problem),
        (is_valid_nsid, syntax._nsid_problem),
        (is_valid_record_key, syntax._record_key_problem),
        (is_valid_tid, syntax._tid_problem),
    ]
    for is_valid, problem in oracles:
        assert is_valid(text) == (problem(text) is None), (is_valid.__name__, problem(text))


# --- datetimes ---------------------------------------------------------------------------

DAY_ONE = datetime(1, 1, 1, tzinfo=UTC)
YEAR_ZERO_MICROS = 366 * 86_400 * 1_000_000  # 0000 is a leap year


def _slow_datetime(text: str) -> datetime | str:
    """parse_datetime by the spec's rules alone: the instant, or the InvalidSyntax reason."""
    try:
        micros = syntax._datetime_micros(text)
    except InvalidSyntax as error:
        return error.reason
    if micros < YEAR_ZERO_MICROS:
        return "year 0000"
    return DAY_ONE + timedelta(microseconds=micros - YEAR_ZERO_MICROS)


@given(near_misses)
def test_fromisoformat_fast_path_agrees_with_spec_rules(text: str) -> None:
    expected = _slow_datetime(text)
    reason = _reason(parse_datetime, text)
    if isinstance(expected, datetime):
        assert reason is None
        assert parse_datetime(text) == expected
    else:
        assert reason is not None
        assert expected in reason


offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets)
)
def test_parse_datetime_agrees_with_isoformat(moment: datetime) -> None:
    parsed = parse_datetime(moment.isoformat())
    assert parsed == moment
    assert parsed.tzinfo is UTC


@given(
    year=st.integers(2, 9998),
    fields=st.tuples(
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 61),
    ),
    offset=st.tuples(st.sampled_from("+-"), st.integers(0, 24), st.integers(0, 60)),
)
def test_datetime_validity_agrees_with_python_calendar(
    year: int, fields: tuple[int, int, int, int, int], offset: tuple[str, int, int]
) -> None:
    month, day, hour, minute, second = fields
    sign, offset_hours, offset_minutes = offset
    text = (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        f"{sign}{offset_hours:02d}:{offset_minutes:02d}"
    )
    assume(not text.endswith("-00:00"))
    try:
        span = timedelta(hours=offset_hours, minutes=offset_minutes)
        zone = timezone(span if sign == "+" else -span)
        expected: datetime | None = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        expected = None
    if offset_minutes > 59:  # timezone() takes 01:60 as 02:00; the syntax does not
        expected = None
    assert is_valid_datetime(text) == (expected is not None)
    if expected is not None:
        assert parse_datetime(text) == expected
