"""Syntax validators against the atproto interop vectors, then behaviour the vectors miss."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bsky_backfill.atproto.syntax import (
    AtUri,
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
from bsky_backfill.errors import InvalidDid, InvalidSyntax
from tests.support import shared_dir


def _parses_to_itself(parse: Callable[[str], object]) -> Callable[[str], None]:
    def check(text: str) -> None:
        assert parse(text) == text

    return check


def _check_handle(text: str) -> None:
    assert parse_handle(text) == text.lower()


def _check_at_uri(text: str) -> None:
    assert str(parse_at_uri(text)) == text


def _check_datetime(text: str) -> None:
    # Year 0000 is valid atproto but below datetime.min: the one valid case parse refuses.
    if text.startswith("0000-"):
        with pytest.raises(InvalidSyntax, match="year 0000"):
            parse_datetime(text)
    else:
        assert parse_datetime(text).tzinfo is UTC


# interop file prefix -> (error kind, parse, check of a valid line's parse, is_valid)
KINDS: dict[str, tuple[str, Callable[[str], Any], Callable[[str], None], Callable[..., bool]]] = {
    "did": ("did", parse_did, _parses_to_itself(parse_did), is_valid_did),
    "handle": ("handle", parse_handle, _check_handle, is_valid_handle),
    "nsid": ("nsid", parse_nsid, _parses_to_itself(parse_nsid), is_valid_nsid),
    "recordkey": (
        "record-key",
        parse_record_key,
        _parses_to_itself(parse_record_key),
        is_valid_record_key,
    ),
    "tid": ("tid", parse_tid, _parses_to_itself(parse_tid), is_valid_tid),
    "aturi": ("at-uri", parse_at_uri, _check_at_uri, is_valid_at_uri),
    "datetime": ("datetime", parse_datetime, _check_datetime, is_valid_datetime),
}


@cache
def _cases(path: Path) -> dict[int, str]:
    """Line number -> case: every line but blank ones and '#' comments, whitespace kept."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return {n: line for n, line in enumerate(lines, 1) if line and not line.startswith("#")}


def _params(suffix: str, kinds: list[str]) -> list[Any]:
    """One case per line, ``(kind, filename, line number)``; a list, as pytest 9.2 wants."""
    params = []
    for kind in kinds:
        filename = f"{kind}_{suffix}.txt"
        path = shared_dir() / "interop" / "syntax" / filename
        if not path.is_file():
            # One stand-in case: its interop_dir fixture skips, or fails under CI.
            params.append(pytest.param(kind, filename, 0, id=f"{kind}-no-data"))
            continue
        for n, line in _cases(path).items():
            params.append(pytest.param(kind, filename, n, id=f"{kind}-L{n}-{ascii(line)[:40]}"))
    return params


def _case(interop_dir: Path, filename: str, lineno: int) -> str:
    return _cases(interop_dir / "syntax" / filename)[lineno]


@pytest.mark.parametrize(("kind", "filename", "lineno"), _params("syntax_valid", list(KINDS)))
def test_interop_valid_line_is_accepted(
    interop_dir: Path, kind: str, filename: str, lineno: int
) -> None:
    text = _case(interop_dir, filename, lineno)
    _, _, check_parse, is_valid = KINDS[kind]
    assert is_valid(text)
    check_parse(text)


@pytest.mark.parametrize(("kind", "filename", "lineno"), _params("syntax_invalid", list(KINDS)))
def test_interop_invalid_line_is_rejected(
    interop_dir: Path, kind: str, filename: str, lineno: int
) -> None:
    text = _case(interop_dir, filename, lineno)
    error_kind, parse, _, is_valid = KINDS[kind]
    assert not is_valid(text)
    with pytest.raises(InvalidSyntax) as caught:
        parse(text)
    assert caught.value.kind == error_kind
    assert caught.value.value == text


@pytest.mark.parametrize(("kind", "filename", "lineno"), _params("parse_invalid", ["datetime"]))
def test_interop_unparseable_datetime_is_rejected(
    interop_dir: Path, kind: str, filename: str, lineno: int
) -> None:
    text = _case(interop_dir, filename, lineno)
    assert not is_valid_datetime(text)
    with pytest.raises(InvalidSyntax):
        parse_datetime(text)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "reason"),
    [
        (parse_did, "DID:plc:abc", "must start with 'did:'"),
        (parse_did, "did:plc:" + "a" * 2041, "longer than 2048 characters"),
        (parse_did, "did:Plc:abc", "method 'Plc' must be one or more lowercase ASCII letters"),
        (parse_did, "did:plc:abc:", "must not end with ':'"),
        (parse_did, "did:plc:a/b", "disallowed character '/'"),
        (parse_handle, "john..test", "empty label"),
        (parse_handle, "john.0", "top-level domain '0' must not start with a digit"),
        (parse_handle, "jo_hn.test", "disallowed character '_'"),
        (parse_handle, "john-.test", "label 'john-' must not start or end with '-'"),
        (parse_handle, "org", "at least two labels"),
        (parse_nsid, "com.example", "at least three segments"),
        (parse_nsid, "com.example.fooBar.2", "name '2' must be ASCII letters and digits"),
        (parse_nsid, "0two.example.foo", "first segment '0two' must not start with a digit"),
        (parse_record_key, "..", "must not be '.' or '..'"),
        (parse_record_key, "o" * 513, "longer than 512 characters"),
        (parse_record_key, "", "must not be empty"),
        (parse_tid, "kjzfcijpj2z2a", "first character 'k'"),
        (parse_tid, "3jzfcijpj2z2", "must be 13 characters, not 12"),
        (parse_tid, "3JZFCIJPJ2Z2A", "character 'J' is not in the base32-sortable alphabet"),
        (parse_at_uri, "http://x.test", "must start with 'at://'"),
        (parse_at_uri, "at://did:plc:asdf123/", "must not end with '/'"),
        (parse_at_uri, "at://did:plc:asdf123#/frag", "query and fragment parts"),
        (parse_at_uri, "at://a.test/com.example.post/rkey/more", "more than two path segments"),
        (parse_at_uri, "at://name/com.example.post", "authority is not a DID or handle"),
        (parse_at_uri, "at://a.test/com.example_post", "collection is not an NSID"),
        (parse_at_uri, "at://a.test/com.example.post/%30", "record key is invalid"),
        (parse_datetime, "1985-04-12T23:20:50.123", "timezone is required"),
        (parse_datetime, "1985-04-12T23:20:50.123z", "timezone 'z' must be 'Z'"),
        (parse_datetime, "1985-04-12 23:20:50Z", "contains whitespace"),
        (parse_datetime, "1985-04-12t23:20:50Z", "upper-case 'T'"),
        (parse_datetime, "1985-04-12T23:20:50.123-00:00", "'-00:00' is not allowed"),
        (parse_datetime, "1985-02-29T00:00:00Z", "day 29 out of range for 1985-02"),
        (parse_datetime, "1985-04-12T23:59:60Z", "leap seconds"),
        (parse_datetime, "0000-01-01T00:00:00+01:00", "before 0000-01-01T00:00:00Z"),
        (parse_datetime, "9999-12-31T23:00:00-01:00", "after 9999-12-31T23:59:59Z"),
        (parse_datetime, "1985-04-12T23:20:50." + "1" * 50 + "Z", "longer than 64 characters"),
    ],
)
def test_error_reason_names_the_problem(
    parse: Callable[[str], object], text: str, reason: str
) -> None:
    with pytest.raises(InvalidSyntax) as caught:
        parse(text)
    assert reason in caught.value.reason
    assert caught.value.reason in str(caught.value)


def test_parse_did_raises_invalid_did() -> None:
    with pytest.raises(InvalidDid) as caught:
        parse_did("did:METHOD:val")
    assert caught.value.kind == "did"


VALIDATORS = [
    is_valid_did,
    is_valid_handle,
    is_valid_nsid,
    is_valid_record_key,
    is_valid_tid,
    is_valid_at_uri,
    is_valid_datetime,
]
PARSERS = [
    parse_did,
    parse_handle,
    parse_nsid,
    parse_record_key,
    parse_tid,
    parse_at_uri,
    parse_datetime,
]
NOT_STRINGS = [None, 0, 1.5, b"did:plc:abc", ["at://a.test"], object()]


@pytest.mark.parametrize("is_valid", VALIDATORS)
@pytest.mark.parametrize("value", NOT_STRINGS, ids=lambda v: type(v).__name__)
def test_is_valid_returns_false_for_non_str(
    is_valid: Callable[[object], bool], value: object
) -> None:
    assert is_valid(value) is False


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("value", NOT_STRINGS, ids=lambda v: type(v).__name__)
def test_parse_rejects_non_str_as_invalid_syntax(
    parse: Callable[[Any], object], value: object
) -> None:
    with pytest.raises(InvalidSyntax, match="must be a str"):
        parse(value)


# --- handles, AT-URIs --------------------------------------------------------------------


def test_parse_handle_lowercases() -> None:
    assert parse_handle("XX.LCS.MIT.EDU") == "xx.lcs.mit.edu"


def test_parse_handle_keeps_reserved_tlds() -> None:
    assert parse_handle("laptop.local") == "laptop.local"


def test_parse_at_uri_splits_record_uri() -> None:
    uri = parse_at_uri("at://did:plc:asdf123/app.bsky.feed.post/3jzfcijpj2z2a")
    assert uri == AtUri("did:plc:asdf123", "app.bsky.feed.post", "3jzfcijpj2z2a")


def test_parse_at_uri_of_repo_has_no_path() -> None:
    assert parse_at_uri("at://Alice.Test") == AtUri("Alice.Test", None, None)


def test_at_uri_str_joins_present_parts() -> None:
    assert str(AtUri("alice.test", "app.bsky.feed.like")) == "at://alice.test/app.bsky.feed.like"


# --- datetimes ---------------------------------------------------------------------------


def test_parse_datetime_converts_offset_to_utc() -> None:
    parsed = parse_datetime("1985-04-12T23:20:50.123-07:00")
    assert parsed == datetime(1985, 4, 13, 6, 20, 50, 123000, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_parse_datetime_truncates_below_microseconds() -> None:
    assert parse_datetime("1985-04-12T23:20:50.1234569Z").microsecond == 123456


def test_parse_datetime_accepts_leap_day() -> None:
    assert parse_datetime("2000-02-29T00:00:00Z") == datetime(2000, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime.max.replace(tzinfo=UTC)),
        ("0000-12-31T23:00:00-01:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59+23:59", datetime(9999, 12, 31, 0, 0, 59, tzinfo=UTC)),
    ],
)
def test_parse_datetime_reaches_both_ends_of_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0000-01-01T00:00:00Z", "0000-02-29T12:00:00Z", "0001-01-01T00:30:00+01:00"],
)
def test_year_zero_instant_is_valid_but_not_parseable(text: str) -> None:
    assert is_valid_datetime(text)
    with pytest.raises(InvalidSyntax, match="year 0000"):
        parse_datetime(text)


# --- TIDs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tid"),
    [
        (0, "2222222222222"),
        (1, "2222222222223"),
        (0x0102030405060708, "242k52k4kg3sc"),
        (0x4000000000000000, "6222222222222"),
        ((1 << 63) - 1, "bzzzzzzzzzzzz"),
        ((1 << 64) - 1, "jzzzzzzzzzzzz"),
    ],
)
def test_tid_known_vector_round_trips(value: int, tid: str) -> None:
    assert int_to_tid(value) == tid
    assert tid_to_int(tid) == value


def test_tid_parts_split_timestamp_and_clock_id() -> None:
    tid = "242k52k4kg3sc"  # 0x0102030405060708
    assert tid_timestamp_micros(tid) == 0x0102030405060708 >> 10
    assert tid_clock_id(tid) == 0x308
    assert micros_to_tid(0x0102030405060708 >> 10, 0x308) == tid


def test_real_tid_round_trips_through_datetime() -> None:
    tid = "3kao2cl6lyj2p"
    when = tid_to_datetime(tid)
    assert when.year == 2023
    assert when.tzinfo is UTC
    assert datetime_to_tid(when, tid_clock_id(tid)) == tid


def test_datetime_to_tid_accepts_any_offset() -> None:
    moment = datetime(2024, 1, 1, 12, tzinfo=UTC)
    shifted = moment.astimezone(timezone(timedelta(hours=-5)))
    assert datetime_to_tid(shifted, 7) == datetime_to_tid(moment, 7)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: int_to_tid(-1), r"\[0, 2\*\*64\)"),
        (lambda: int_to_tid(1 << 64), r"\[0, 2\*\*64\)"),
        (lambda: micros_to_tid(1 << 53), "2\\*\\*53"),
        (lambda: micros_to_tid(0, 1024), "clock id"),
        (lambda: datetime_to_tid(datetime(2024, 1, 1)), "aware"),
        (lambda: datetime_to_tid(datetime(1969, 12, 31, tzinfo=UTC)), "2\\*\\*53"),
    ],
    ids=["negative", "over-64-bits", "micros-over-53-bits", "clock-id", "naive", "pre-epoch"],
)
def test_tid_construction_rejects_out_of_range(call: Callable[[], str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_tid_helpers_reject_invalid_tid() -> None:
    with pytest.raises(InvalidSyntax):
        tid_to_datetime("3jzf-cij-pj2z-2a")
