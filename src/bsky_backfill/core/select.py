"""Which records a job keeps, and the dataset row each kept record becomes.

The time window (DESIGN.md): a record is inside iff ``start <= t < end``, where ``t`` is
its ``createdAt`` (RFC 3339, UTC) — unless that is missing, malformed, or more than five
minutes after the fetch (flagged, not trusted); then the moment of a TID record key; with
neither, the record is outside and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from bsky_backfill.atproto.native import fastrepo
from bsky_backfill.atproto.repo import RecordParts, Repo
from bsky_backfill.atproto.syntax import is_valid_tid, parse_datetime, tid_to_datetime
from bsky_backfill.core.models import RecordRow
from bsky_backfill.errors import InvalidSyntax

__all__ = [
    "FUTURE_TOLERANCE",
    "Selection",
    "SelectionCounts",
    "iter_rows",
    "record_moment",
]

FUTURE_TOLERANCE: Final = timedelta(minutes=5)


def _tuple_row(cls: type[RecordRow], *values: Any) -> RecordRow:
    return tuple.__new__(cls, values)


# A row made in C is left out of the cyclic garbage collector (CPython keeps a named tuple
# tracked for life, and every collection of an older generation then walked each row a
# batch holds); both skip NamedTuple's Python-level __new__, a third of a row's cost.
_new_row: Final = fastrepo.row if fastrepo is not None else _tuple_row


@dataclass(frozen=True, slots=True)
class Selection:
    """What to keep: collections (None: all), a half-open window, and subject URIs."""

    collections: frozenset[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    subject_uris: frozenset[str] | None = None


@dataclass(slots=True)
class SelectionCounts:
    """What the selection dropped, per reason, and which times were not trusted."""

    outside_window: int = 0
    no_time: int = 0
    not_subject: int = 0
    flags: Counter[str] = field(default_factory=Counter)


def record_moment(
    created: Any, rkey: str, fetched_at: datetime
) -> tuple[datetime | None, str | None]:
    """``(moment, flag)``: the record's time by the rules above from its ``createdAt``
    value (None when absent), and why that was not used (``missing`` / ``malformed`` /
    ``future``) or None when it was."""
    flag: str | None
    if created is None:
        flag = "missing"
    else:
        try:
            moment = parse_datetime(created) if isinstance(created, str) else None
        except InvalidSyntax:
            moment = None
        if moment is None:
            flag = "malformed"
        elif moment > fetched_at + FUTURE_TOLERANCE:
            flag = "future"
        else:
            return moment, None
    return (tid_to_datetime(rkey) if is_valid_tid(rkey) else None), flag


_POST: Final = "app.bsky.feed.post"
_SUBJECT_URI: Final = frozenset({"app.bsky.feed.like", "app.bsky.feed.repost"})
_SUBJECT_DID: Final = frozenset({"app.bsky.graph.follow", "app.bsky.graph.block"})


def iter_rows(
    repo: Repo,
    records: Iterable[RecordParts],
    selection: Selection,
    *,
    pds: str,
    job_id: str,
    fetched_at: datetime,
    counts: SelectionCounts,
) -> Iterator[RecordRow]:
    """The rows of ``records`` that ``selection`` keeps, as they are read; drops are
    tallied in ``counts``.

    ``records``: usually ``repo.record_parts()``. Collections are expected to be pruned
    already (``read_repo(collections=...)``); they are checked again here so any record
    source gives the same rows. The convenience columns are the record's fields that
    its collection gives a meaning: ``text`` and the reply URIs of a post, the subject
    URI of a like or repost, the subject DID of a follow or block.
    """
    collections, start, end, subjects = (
        selection.collections,
        selection.start,
        selection.end,
        selection.subject_uris,
    )
    did, rev, commit_cid = repo.did, repo.rev, repo.commit_cid
    latest = fetched_at + FUTURE_TOLERANCE
    moment: datetime | None
    # One loop, locals only, RecordParts fields by position: this runs for every record.
    for parts in records:
        (collection, rkey, uri, _, cid, record_json, created) = parts[:7]
        if collections is not None and collection not in collections:
            continue
        parsed = parts[12]  # created_moment
        if parsed is not None and parsed <= latest:  # the C reader parsed it: most records
            moment, flag = parsed, None
        else:
            moment, flag = record_moment(created, rkey, fetched_at)
            if flag is not None:
                counts.flags[flag] += 1
        if start is not None or end is not None:
            if moment is None:
                counts.no_time += 1
                continue
            if (start is not None and moment < start) or (end is not None and moment >= end):
                counts.outside_window += 1
                continue
        text = parent = root = subject_uri = subject_did = None
        if collection == _POST:
            text, parent, root = parts[7:10]  # text, reply_parent_uri, reply_root_uri
        elif collection in _SUBJECT_URI:
            subject_uri = parts[10]  # subject_uri
        elif collection in _SUBJECT_DID:
            subject_did = parts[11]  # subject_did
        if subjects is not None and not (uri in subjects or subject_uri in subjects):
            counts.not_subject += 1
            continue
        yield _new_row(
            RecordRow,
            did,
            collection,
            rkey,
            uri,
            cid,
            moment if flag is None else None,
            record_json,
            rev,
            commit_cid,
            pds,
            job_id,
            fetched_at,
            text,
            subject_uri,
            subject_did,
            parent,
            root,
            flag,
        )
