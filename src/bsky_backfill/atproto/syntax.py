"""Syntax of AT Protocol identifiers: DID, handle, NSID, record key, TID, AT-URI, datetime.

For each kind, ``parse_<kind>(s)`` returns the value (a handle lowercased, an AT-URI split
into an :class:`AtUri`, a datetime as an aware UTC ``datetime``) or raises
:class:`~bsky_backfill.errors.InvalidSyntax` (:class:`~bsky_backfill.errors.InvalidDid` for
DIDs) whose ``kind`` is the Lexicon format name and whose ``reason`` names the broken rule.
``is_valid_<kind>(s)`` answers the same question as a bool and never raises, whatever ``s``
is. All functions are pure.

These run once per record, so accepting is a length check plus one precompiled regex; the
rule-by-rule ``_<kind>_problem`` functions run only to explain a rejection, and the property
tests hold the two in agreement.

Specs: https://atproto.com/specs/ did, handle, nsid, record-key, tid, at-uri-scheme, and
lexicon#datetime; vectors: bluesky-social/atproto-interop-tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bsky_backfill.errors import InvalidDid, InvalidSyntax

__all__ = [
    "AtUri",
    "datetime_to_tid",
    "int_to_tid",
    "is_valid_at_uri",
    "is_valid_datetime",
    "is_valid_did",
    "is_valid_handle",
    "is_valid_nsid",
    "is_valid_record_key",
    "is_valid_tid",
    "micros_to_tid",
    "parse_at_uri",
    "parse_datetime",
    "parse_did",
    "parse_handle",
    "parse_nsid",
    "parse_record_key",
    "parse_tid",
    "tid_clock_id",
    "tid_timestamp_micros",
    "tid_to_datetime",
    "tid_to_int",
]

_DID_MAX = 2048
_HANDLE_MAX = 253
_LABEL_MAX = 63
# The spec also caps an NSID's domain authority at 253 characters, but the interop vectors
# (and the reference implementations) accept a 283-character one: only the total is capped.
_NSID_MAX = 317
_RKEY_MAX = 512
_AT_URI_MAX = 8192
_DATETIME_MAX = 64

# `[0-9]`, never `\d`: in str patterns `\d` also matches non-ASCII digits.
_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_DID_BAD_CHAR = re.compile(r"[^a-zA-Z0-9._:%-]")
_DID_METHOD_RE = re.compile(r"[a-z]+")
_HANDLE_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_HOSTNAME_BAD_CHAR = re.compile(r"[^a-zA-Z0-9.-]")
_NSID_RE = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
_NSID_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")
_RKEY_RE = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_RKEY_BAD_CHAR = re.compile(r"[^a-zA-Z0-9_~.:-]")
_TID_RE = re.compile(r"[2-7a-j][2-7a-z]{12}")
_TID_BAD_CHAR = re.compile(r"[^2-7a-z]")

_NOT_MATCHED = "does not match the syntax"  # only if a _problem function missed a rule


def _type_problem(s: object) -> str:
    return f"must be a str, not {type(s).__name__}"


def _explain(problem: Callable[[str], str | None], s: object) -> str:
    if not isinstance(s, str):
        return _type_problem(s)
    return problem(s) or _NOT_MATCHED


# --- DID ---------------------------------------------------------------------------------


def is_valid_did(s: object) -> bool:
    """True if ``s`` is a DID: ``did:<lowercase method>:<identifier>``, at most 2048 chars."""
    return isinstance(s, str) and len(s) <= _DID_MAX and _DID_RE.fullmatch(s) is not None


def parse_did(s: str) -> str:
    """Return ``s`` unchanged if it is a DID (any method; DIDs are case-sensitive).

    Percent-encoding is not decoded or checked, as the spec allows. Raises ``InvalidDid``.
    """
    if is_valid_did(s):
        return s
    raise InvalidDid("did", s, _explain(_did_problem, s))


def _did_problem(s: str) -> str | None:
    if len(s) > _DID_MAX:
        return f"longer than {_DID_MAX} characters"
    if not s.startswith("did:"):
        return "must start with 'did:'"
    if bad := _DID_BAD_CHAR.search(s):
        return f"disallowed character {bad.group()!r} (only ASCII letters, digits and '._:%-')"
    method, colon, identifier = s[4:].partition(":")
    if not colon:
        return "needs 'did:<method>:<identifier>'"
    if not _DID_METHOD_RE.fullmatch(method):
        return f"method {method!r} must be one or more lowercase ASCII letters"
    if not identifier:
        return "identifier after the method must not be empty"
    if s[-1] in ":%":
        return f"must not end with {s[-1]!r}"
    return None


# --- handle ------------------------------------------------------------------------------


def is_valid_handle(s: object) -> bool:
    """True if ``s`` is a handle: a hostname of 2+ labels whose last label starts with a letter."""
    return isinstance(s, str) and len(s) <= _HANDLE_MAX and _HANDLE_RE.fullmatch(s) is not None


def parse_handle(s: str) -> str:
    """Return the handle ``s`` lowercased (handles are case-insensitive).

    Syntax only: reserved TLDs such as ``.local`` or ``.onion`` pass here, as the spec
    says they must; refusing them is resolution's job. Raises ``InvalidSyntax``.
    """
    if is_valid_handle(s):
        return s.lower()
    raise InvalidSyntax("handle", s, _explain(_handle_problem, s))


def _handle_problem(s: str) -> str | None:
    if len(s) > _HANDLE_MAX:
        return f"longer than {_HANDLE_MAX} characters"
    if bad := _HOSTNAME_BAD_CHAR.search(s):
        return f"disallowed character {bad.group()!r} (only ASCII letters, digits, '-' and '.')"
    labels = s.split(".")
    if len(labels) < 2:
        return "needs at least two labels separated by '.'"
    for label in labels:
        if problem := _label_problem(label, "label"):
            return problem
    if labels[-1][0].isdigit():
        return f"top-level domain {labels[-1]!r} must not start with a digit"
    return None


def _label_problem(label: str, noun: str) -> str | None:
    if not label:
        return f"empty {noun} (leading, trailing or doubled '.')"
    if len(label) > _LABEL_MAX:
        return f"{noun} of {len(label)} characters is longer than {_LABEL_MAX}"
    if label[0] == "-" or label[-1] == "-":
        return f"{noun} {label!r} must not start or end with '-'"
    return None


# --- NSID --------------------------------------------------------------------------------


def is_valid_nsid(s: object) -> bool:
    """True if ``s`` is an NSID: a reversed domain authority, then a ``.name``."""
    return isinstance(s, str) and len(s) <= _NSID_MAX and _NSID_RE.fullmatch(s) is not None


def parse_nsid(s: str) -> str:
    """Return ``s`` unchanged if it is an NSID (case is kept: the name is case-sensitive).

    Raises ``InvalidSyntax``.
    """
    if is_valid_nsid(s):
        return s
    raise InvalidSyntax("nsid", s, _explain(_nsid_problem, s))


def _nsid_problem(s: str) -> str | None:
    if len(s) > _NSID_MAX:
        return f"longer than {_NSID_MAX} characters"
    if bad := _HOSTNAME_BAD_CHAR.search(s):
        return f"disallowed character {bad.group()!r} (only ASCII letters, digits, '-' and '.')"
    *authority, name = s.split(".")
    if len(authority) < 2:
        return "needs at least three segments separated by '.'"
    for segment in authority:
        if problem := _label_problem(segment, "segment"):
            return problem
    if authority[0][0].isdigit():
        return f"first segment {authority[0]!r} must not start with a digit"
    if not name:
        return "empty name (trailing '.')"
    if len(name) > _LABEL_MAX:
        return f"name of {len(name)} characters is longer than {_LABEL_MAX}"
    if not _NSID_NAME_RE.fullmatch(name):
        return f"name {name!r} must be ASCII letters and digits, starting with a letter"
    return None


# --- record key --------------------------------------------------------------------------


def is_valid_record_key(s: object) -> bool:
    """True if ``s`` is a record key: 1-512 of ``A-Za-z0-9._:~-``, and not ``.`` or ``..``."""
    return isinstance(s, str) and _RKEY_RE.fullmatch(s) is not None and s not in (".", "..")


def parse_record_key(s: str) -> str:
    """Return ``s`` unchanged if it is a record key (case-sensitive). Raises ``InvalidSyntax``."""
    if is_valid_record_key(s):
        return s
    raise InvalidSyntax("record-key", s, _explain(_record_key_problem, s))


def _record_key_problem(s: str) -> str | None:
    if not s:
        return "must not be empty"
    if len(s) > _RKEY_MAX:
        return f"longer than {_RKEY_MAX} characters"
    if s in (".", ".."):
        return "must not be '.' or '..'"
    if bad := _RKEY_BAD_CHAR.search(s):
        return f"disallowed character {bad.group()!r} (only ASCII letters, digits and '._:~-')"
    return None


# --- TID ---------------------------------------------------------------------------------

_TID_LEN = 13
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
# Python's int(x, 32) reads digits 0-9a-v; TID digits map onto them in order.
_TID_TO_BASE32 = str.maketrans(_TID_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_TID_SHIFTS = tuple(range(5 * (_TID_LEN - 1), -1, -5))
# 13 base32 digits hold 65 bits; a first digit of at most 'j' keeps the value within 64.
_TID_INT_LIMIT = 1 << 64
_MICROS_LIMIT = 1 << 53
_CLOCK_ID_LIMIT = 1 << 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def is_valid_tid(s: object) -> bool:
    """True if ``s`` is a TID: 13 base32-sortable characters, the first in ``2-7a-j``."""
    return isinstance(s, str) and _TID_RE.fullmatch(s) is not None


def parse_tid(s: str) -> str:
    """Return ``s`` unchanged if it is a TID. Raises ``InvalidSyntax``."""
    if is_valid_tid(s):
        return s
    raise InvalidSyntax("tid", s, _explain(_tid_problem, s))


def _tid_problem(s: str) -> str | None:
    if len(s) != _TID_LEN:
        return f"must be {_TID_LEN} characters, not {len(s)}"
    if bad := _TID_BAD_CHAR.search(s):
        return f"character {bad.group()!r} is not in the base32-sortable alphabet {_TID_ALPHABET}"
    if s[0] > "j":
        return f"first character {s[0]!r} must be one of 234567abcdefghij (value over 64 bits)"
    return None


def tid_to_int(tid: str) -> int:
    """The unsigned 64-bit integer a TID encodes. Raises ``InvalidSyntax``.

    The spec's syntax (first character up to ``j``) admits values with the top bit set, so
    the result is below 2**64, not only 2**63; :func:`int_to_tid` inverts it exactly.
    """
    return int(parse_tid(tid).translate(_TID_TO_BASE32), 32)


def int_to_tid(v: int) -> str:
    """Encode ``0 <= v < 2**64`` as a TID (the inverse of :func:`tid_to_int`).

    Raises ``ValueError`` outside that range.
    """
    if not 0 <= v < _TID_INT_LIMIT:
        raise ValueError(f"TID integer must be in [0, 2**64), got {v}")
    return "".join(_TID_ALPHABET[(v >> shift) & 31] for shift in _TID_SHIFTS)


def tid_timestamp_micros(tid: str) -> int:
    """Microseconds since the UNIX epoch in a TID (``value >> 10``). Raises ``InvalidSyntax``."""
    return tid_to_int(tid) >> 10


def tid_clock_id(tid: str) -> int:
    """The 10-bit clock identifier of a TID (``value & 0x3ff``). Raises ``InvalidSyntax``."""
    return tid_to_int(tid) & (_CLOCK_ID_LIMIT - 1)


def tid_to_datetime(tid: str) -> datetime:
    """A TID's timestamp as an aware UTC datetime, exact to the microsecond.

    The timestamp is whatever the writer chose (record keys are client-chosen), not proof
    of when anything happened. Raises ``InvalidSyntax``.
    """
    return _EPOCH + timedelta(microseconds=tid_timestamp_micros(tid))


def micros_to_tid(micros: int, clock_id: int = 0) -> str:
    """The TID for ``micros`` since the UNIX epoch and a clock id, in the spec's layout.

    Raises ``ValueError`` unless ``0 <= micros < 2**53`` and ``0 <= clock_id < 1024``.
    """
    if not 0 <= micros < _MICROS_LIMIT:
        raise ValueError(f"TID timestamp must be in [0, 2**53) microseconds, got {micros}")
    if not 0 <= clock_id < _CLOCK_ID_LIMIT:
        raise ValueError(f"TID clock id must be in [0, 1024), got {clock_id}")
    return int_to_tid(micros << 10 | clock_id)


def datetime_to_tid(dt: datetime, clock_id: int = 0) -> str:
    """The TID for an aware datetime (exact to the microsecond) and a clock id.

    Raises ``ValueError`` for a naive datetime (its instant is unknown), one before the
    epoch or 2**53 microseconds after it (year 2255), or a clock id outside [0, 1024).
    """
    if dt.utcoffset() is None:
        raise ValueError(f"TID needs an aware datetime, got naive {dt.isoformat()}")
    return micros_to_tid((dt - _EPOCH) // _ONE_MICROSECOND, clock_id)


# --- AT-URI ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AtUri:
    """A restricted-syntax AT-URI, ``at://AUTHORITY[/COLLECTION[/RKEY]]``.

    ``authority`` is a DID or a handle as written; ``rkey`` is set only with ``collection``.
    Fields are not checked here: build one with :func:`parse_at_uri`. ``str()`` gives back
    the URI.
    """

    authority: str
    collection: str | None = None
    rkey: str | None = None

    def __str__(self) -> str:
        parts = (self.authority, self.collection, self.rkey)
        return "at://" + "/".join(p for p in parts if p is not None)


def is_valid_at_uri(s: object) -> bool:
    """True if ``s`` is a restricted-syntax AT-URI (see :func:`parse_at_uri`)."""
    if not isinstance(s, str):
        return False
    try:
        parse_at_uri(s)
    except InvalidSyntax:
        return False
    return True


def parse_at_uri(s: str) -> AtUri:
    """Split a restricted-syntax AT-URI into authority, collection and record key.

    This is the Lexicon ``at-uri`` form: ``at://`` DID or handle, then optionally ``/``
    NSID, then optionally ``/`` record key; no query, fragment or trailing slash, at most
    8192 characters. The handle authority is kept as written, so ``str()`` round-trips.
    Raises ``InvalidSyntax`` (kind ``at-uri``) naming the bad part.
    """
    if not isinstance(s, str):
        raise InvalidSyntax("at-uri", s, _type_problem(s))
    if len(s) > _AT_URI_MAX:
        raise InvalidSyntax("at-uri", s, f"longer than {_AT_URI_MAX} characters")
    if not s.startswith("at://"):
        raise InvalidSyntax("at-uri", s, "must start with 'at://'")
    if "?" in s or "#" in s:
        raise InvalidSyntax("at-uri", s, "query and fragment parts are not allowed")
    if s.endswith("/"):
        raise InvalidSyntax("at-uri", s, "must not end with '/'")
    parts = s[5:].split("/")
    if len(parts) > 3:
        raise InvalidSyntax("at-uri", s, "more than two path segments (collection, record key)")
    if "" in parts:
        raise InvalidSyntax("at-uri", s, "empty authority or path segment")
    problem = _authority_problem(parts[0])
    if problem is None and len(parts) > 1 and not is_valid_nsid(parts[1]):
        problem = f"collection is not an NSID: {_explain(_nsid_problem, parts[1])}"
    if problem is None and len(parts) > 2 and not is_valid_record_key(parts[2]):
        problem = f"record key is invalid: {_explain(_record_key_problem, parts[2])}"
    if problem is not None:
        raise InvalidSyntax("at-uri", s, problem)
    return AtUri(*parts)


def _authority_problem(authority: str) -> str | None:
    # A handle can hold no ':', so the 'did:' prefix decides which syntax applies.
    if authority.startswith("did:"):
        if is_valid_did(authority):
            return None
        return f"authority is not a DID: {_explain(_did_problem, authority)}"
    if is_valid_handle(authority):
        return None
    return f"authority is not a DID or handle: {_explain(_handle_problem, authority)}"


# --- datetime ----------------------------------------------------------------------------

# The shape, strictly; the calendar is checked by fromisoformat or _datetime_micros. The
# offset range is in the regex because fromisoformat reads "+05:75" as +06:15.
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)
_DATE_PART_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9])")
_TIME_PART_RE = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?![0-9])(\.[0-9]*)?")
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)
_MICROS_PER_DAY = 86_400_000_000


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_before(year: int, month: int) -> int:
    """Days from 0000-01-01 to the first of ``month`` in the proleptic Gregorian calendar."""
    leap_years_before = (year + 3) // 4 - (year + 99) // 100 + (year + 399) // 400
    leap_day = 1 if month > 2 and _is_leap(year) else 0
    return 365 * year + leap_years_before + _DAYS_BEFORE_MONTH[month - 1] + leap_day


# The spec's range is 0000-01-01 to 9999-12-31 UTC, but year 0000 is below datetime.min, so
# the exact check counts microseconds from 0000-01-01T00:00Z instead of using datetime.
_YEAR_1_MICROS = _days_before(1, 1) * _MICROS_PER_DAY
_YEAR_10000_MICROS = _days_before(10000, 1) * _MICROS_PER_DAY


def is_valid_datetime(s: object) -> bool:
    """True if ``s`` is an atproto datetime (syntax and calendar; see :func:`parse_datetime`).

    Also True for instants in year 0000 UTC, which are valid but which
    :func:`parse_datetime` cannot return.
    """
    if not isinstance(s, str):
        return False
    if _parse_common_datetime(s) is not None:
        return True
    try:
        _datetime_micros(s)
    except InvalidSyntax:
        return False
    return True


def parse_datetime(s: str) -> datetime:
    """Parse an atproto datetime into an aware datetime in UTC.

    Accepts exactly ``YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM)``, at most 64
    characters: upper-case ``T`` and ``Z``, no ``-00:00``, real calendar dates, no leap
    second, and an instant from 0000-01-01 to 9999-12-31 UTC. Fractions beyond microseconds
    are truncated. Raises ``InvalidSyntax`` (kind ``datetime``) for anything else, and also
    for a valid instant in year 0000 UTC, which ``datetime`` cannot represent.
    """
    if not isinstance(s, str):
        raise InvalidSyntax("datetime", s, _type_problem(s))
    if (parsed := _parse_common_datetime(s)) is not None:
        return parsed
    # Here s is invalid (this raises, naming the rule) or written in year 0000 local time.
    micros = _datetime_micros(s)
    if micros < _YEAR_1_MICROS:
        raise InvalidSyntax("datetime", s, "valid, but falls in year 0000 UTC, before datetime.min")
    return datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros - _YEAR_1_MICROS)


def _parse_common_datetime(s: str) -> datetime | None:
    """``s`` in UTC, or None if invalid or not representable; fromisoformat runs at C speed."""
    if len(s) > _DATETIME_MAX or _DATETIME_RE.fullmatch(s) is None or s.endswith("-00:00"):
        return None
    try:
        parsed = datetime.fromisoformat(s)
        # Most records say "Z": already UTC, no conversion (1 % of the engine's CPU).
        return parsed if s.endswith("Z") else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # a bad field, or outside years 1-9999 in UTC
        return None


def _datetime_micros(s: str) -> int:
    """Microseconds from 0000-01-01T00:00Z to the instant ``s`` names, by the spec's rules.

    Raises ``InvalidSyntax`` naming the first broken rule.
    """
    if len(s) > _DATETIME_MAX:
        raise InvalidSyntax("datetime", s, f"longer than {_DATETIME_MAX} characters")
    match = _DATETIME_RE.fullmatch(s)
    if match is None:
        raise InvalidSyntax("datetime", s, _datetime_shape_problem(s))
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10)
    if problem := _field_problem(year, month, day, hour, minute, second):
        raise InvalidSyntax("datetime", s, problem)
    offset = 0
    if sign is not None:
        if s.endswith("-00:00"):
            raise InvalidSyntax("datetime", s, "'-00:00' is not allowed (write 'Z' or '+00:00')")
        offset = (int(offset_hours) * 60 + int(offset_minutes)) * 60
        offset = offset if sign == "+" else -offset
    seconds = (_days_before(year, month) + day - 1) * 86_400 + hour * 3600 + minute * 60 + second
    micros = (seconds - offset) * 1_000_000 + (int(fraction[:6].ljust(6, "0")) if fraction else 0)
    if micros < 0:
        raise InvalidSyntax("datetime", s, "normalizes to before 0000-01-01T00:00:00Z")
    if micros >= _YEAR_10000_MICROS:
        raise InvalidSyntax("datetime", s, "normalizes to after 9999-12-31T23:59:59Z")
    return micros


def _field_problem(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> str | None:
    if not 1 <= month <= 12:
        return f"month {month:02d} out of range 01-12"
    days_in_month = _DAYS_BEFORE_MONTH[month] - _DAYS_BEFORE_MONTH[month - 1]
    if month == 2 and _is_leap(year):
        days_in_month += 1
    if not 1 <= day <= days_in_month:
        return f"day {day:02d} out of range for {year:04d}-{month:02d}"
    if hour > 23:
        return f"hour {hour:02d} out of range 00-23"
    if minute > 59:
        return f"minute {minute:02d} out of range 00-59"
    if second > 59:
        return f"second {second:02d} out of range 00-59 (leap seconds are not accepted)"
    return None


def _datetime_shape_problem(s: str) -> str:
    if any(c.isspace() for c in s):
        return "contains whitespace"
    if not _DATE_PART_RE.match(s):
        return "must start with a YYYY-MM-DD date (4-digit year, 2-digit month and day)"
    if s[10:11] != "T":
        return "date and time must be separated by an upper-case 'T'"
    time = _TIME_PART_RE.match(s, 11)
    if time is None:
        return "time must be HH:MM:SS with 2-digit fields"
    if time.group(1) == ".":
        return "'.' must be followed by fractional-second digits"
    if time.end() == len(s):
        return "timezone is required ('Z' or +HH:MM / -HH:MM)"
    return f"timezone {s[time.end() :]!r} must be 'Z' or an offset from -23:59 to +23:59 (±HH:MM)"
