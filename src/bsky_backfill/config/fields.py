"""Value types of the config schema: checks and normalisation of single fields.

Each validator raises ``ValueError`` whose text says what is wrong and how to fix it, and
never quotes the value itself: a value may have come from an environment variable, whose
text must not reach an error message (the loader adds the value back where that is safe).
Paths resolve against ``base_dir`` from the validation context (the config file's folder;
the working directory when absent), lexically: the file system is never touched.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    Strict,
    StringConstraints,
    ValidationInfo,
)

from bsky_backfill.atproto.syntax import is_valid_did, is_valid_nsid, parse_datetime
from bsky_backfill.errors import InvalidSyntax

__all__ = [
    "TABLE_SUFFIXES",
    "BaseUrl",
    "ConfigPath",
    "Did",
    "Name",
    "Nsid",
    "S3Uri",
    "TableFile",
    "TableFileOrFolder",
    "Text",
    "WebhookUrl",
    "WindowEnd",
    "WindowStart",
    "check_table_file",
    "is_private_host",
    "parse_window_bound",
    "sorted_unique",
]

TABLE_SUFFIXES = (".txt", ".csv", ".parquet", ".jsonl")
"""Files a list of DIDs or URIs may be read from: one per line, or a named column."""

_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LEGACY_DATETIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}:[0-9]{2}:[0-9]{2}")
_NAIVE_DATETIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+")
_S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            "must be 1-64 characters from a-z, 0-9, '_' and '-' (it names the output folder "
            "and the job), e.g. study_users_2025"
        )
    return value


def _check_nsid(value: str) -> str:
    if not is_valid_nsid(value):
        raise ValueError(
            "is not an NSID: write a reversed domain and a name, e.g. app.bsky.feed.post"
        )
    return value


def _check_did(value: str) -> str:
    if not is_valid_did(value):
        raise ValueError("is not a DID: write did:plc:<24 characters> or did:web:<host>")
    return value


Name = Annotated[str, Strict(), AfterValidator(_check_name)]
"""A job name: ``[a-z0-9_-]``, 1 to 64 characters."""

Nsid = Annotated[str, Strict(), AfterValidator(_check_nsid)]
"""A collection NSID such as ``app.bsky.feed.post``."""

Did = Annotated[str, Strict(), AfterValidator(_check_did)]
"""A DID of any method, checked for syntax only."""


def _to_path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty: give a file or folder path")
        if "\0" in value:
            raise ValueError("contains a NUL character; remove it")
        if value.startswith(("s3://", "http://", "https://")):
            raise ValueError(
                "must be a local path here; for objects in S3 use a source or storage of type: s3"
            )
        path = Path(value)
    else:
        raise ValueError("must be a path string, e.g. ./dids.txt")
    base = (info.context or {}).get("base_dir") or Path.cwd()
    # abspath, not resolve(): normalise '..' without touching the disk, which may be
    # another machine's (configs are also validated by the API before a job runs).
    return Path(os.path.abspath(Path(base) / path.expanduser()))


ConfigPath = Annotated[Path, PlainValidator(_to_path)]
"""A local path; relative ones resolve against the config file's folder, ``~`` expands."""


def check_table_file(path: Path) -> Path:
    """``path`` if its suffix is one of :data:`TABLE_SUFFIXES`; ``ValueError`` if not."""
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(
            "must name a .txt (one per line), .csv, .parquet or .jsonl file; for a SQLite "
            "database use type: sqlite"
        )
    return path


def _table_file_or_folder(path: Path) -> Path:
    # No suffix: a folder of Parquet files, such as an earlier job's records/ dataset.
    return path if not path.suffix else check_table_file(path)


TableFile = Annotated[Path, PlainValidator(_to_path), AfterValidator(check_table_file)]
"""A local ``.txt``/``.csv``/``.parquet``/``.jsonl`` file (see :data:`TABLE_SUFFIXES`)."""

TableFileOrFolder = Annotated[Path, PlainValidator(_to_path), AfterValidator(_table_file_or_folder)]
"""A :data:`TableFile`, or a folder (no suffix) of Parquet files."""

Text = Annotated[str, Strict(), StringConstraints(min_length=1)]
"""Non-empty text."""


def sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` sorted, duplicates dropped; ``ValueError`` if empty.

    For lists that are sets (their order means nothing), so that equal configs hash alike.
    Emptiness is checked here, not with ``min_length``: pydantic would also call a list
    whose items all failed "too short", burying the real errors.
    """
    if not values:
        raise ValueError("must not be empty: list at least one")
    return tuple(sorted(set(values)))


def _check_url(value: str, *, base: bool) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        raise ValueError("is not a URL: write it like https://host[:port]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not carry credentials (user:password@); supply them through the "
            "service's own settings"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed or out-of-range port
    except ValueError:
        raise ValueError("has an invalid port; use a number from 1 to 65535") from None
    if base:
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError("must be a base URL only (scheme and host), e.g. https://host")
        return f"{parts.scheme}://{parts.netloc}"
    return value


BaseUrl = Annotated[str, Strict(), AfterValidator(lambda v: _check_url(v, base=True))]
"""A service's base URL (``https://host[:port]``), normalised without a trailing slash."""

WebhookUrl = Annotated[str, Strict(), AfterValidator(lambda v: _check_url(v, base=False))]
"""A full http(s) URL, path and query kept."""


def _check_s3_uri(value: str) -> str:
    if not value.startswith("s3://"):
        raise ValueError("must be an S3 URI: s3://bucket/key")
    bucket, _, key = value[len("s3://") :].partition("/")
    if not _S3_BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            "names an invalid bucket: 3-63 characters from a-z, 0-9, '.' and '-', e.g. "
            "s3://my-bucket/prefix"
        )
    return f"s3://{bucket}/{key.strip('/')}".rstrip("/")


S3Uri = Annotated[str, Strict(), AfterValidator(_check_s3_uri)]
"""``s3://bucket[/key]``, normalised without a trailing slash."""


def is_private_host(url: str) -> bool:
    """True if ``url``'s host is ``localhost`` or a loopback, private or link-local IP literal.

    Host names other than ``localhost`` are not resolved: this is a check on what the config
    says, the network layer guards what names resolve to.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _window_problem(text: str) -> str:
    if _LEGACY_DATETIME_RE.fullmatch(text):
        hint = "that is the legacy form; write YYYY-MM-DDTHH:MM:SSZ (migrate-config converts)"
    elif _NAIVE_DATETIME_RE.fullmatch(text):
        hint = "a datetime needs a time zone: add Z for UTC, e.g. 2025-01-02T00:00:00Z"
    else:
        hint = 'write a date "2025-01-02" or an RFC 3339 datetime "2025-01-02T00:00:00Z"'
    return f"is not a date or an RFC 3339 datetime: {hint}"


def parse_window_bound(value: object, *, end: bool) -> datetime:
    """The instant a ``time_range`` bound names, as an aware UTC datetime.

    A datetime (RFC 3339 text, or a ``datetime`` with a time zone) is that instant. A bare
    date is the start of that day in UTC, or for ``end`` the start of the next day, so the
    window ``[start, end)`` includes the end date whole. Raises ``ValueError``.
    """
    day: date
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("needs a time zone: add Z for UTC, e.g. 2025-01-02T00:00:00Z")
        return value.astimezone(UTC)
    if isinstance(value, date):
        day = value
    elif isinstance(value, str):
        text = value.strip()
        if not _DATE_RE.fullmatch(text):
            try:
                return parse_datetime(text)
            except InvalidSyntax:
                raise ValueError(_window_problem(text)) from None
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError("is not a calendar date: check the month and day") from None
    else:
        raise ValueError('must be a date or datetime in quotes, e.g. "2025-01-02"')
    try:
        return datetime.combine(day, time(), UTC) + timedelta(days=1 if end else 0)
    except OverflowError:
        raise ValueError("is past the last representable day (9999-12-30)") from None


def _window_start(value: object) -> datetime:
    return parse_window_bound(value, end=False)


def _window_end(value: object) -> datetime | None:
    return None if value is None else parse_window_bound(value, end=True)


WindowStart = Annotated[datetime, BeforeValidator(_window_start)]
"""``time_range.start_date``: the first instant inside the window."""

WindowEnd = Annotated[datetime | None, BeforeValidator(_window_end)]
"""``time_range.end_date``: the first instant after the window, or None for no end."""
