"""The dataset's columns (DESIGN.md "Output dataset") and rows as plain values.

Every sink writes the same columns in this order. Text sinks (JSONL, SQLite) hold
timestamps as RFC 3339 strings in UTC with microseconds (``2025-01-02T03:04:05.678000Z``:
fixed width, so they sort as text), ``records_by_collection`` as JSON text, and ``status``
as its string value. Naive datetimes are taken as UTC, as pyarrow does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain, groupby
from operator import attrgetter
from typing import Final, Protocol

from bsky_backfill.core.models import RecordRow, RepoResult, RepoRow

__all__ = [
    "RECORD_COLUMNS",
    "REPO_COLUMNS",
    "RecordsFile",
    "counts_json",
    "group_by_collection",
    "record_chunks",
    "record_values",
    "repo_values",
    "rfc3339",
]

RECORD_COLUMNS: Final = (
    "did",
    "collection",
    "rkey",
    "uri",
    "cid",
    "created_at",
    "record",
    "rev",
    "commit_cid",
    "pds",
    "job_id",
    "fetched_at",
    "text",
    "subject_uri",
    "subject_did",
    "reply_parent_uri",
    "reply_root_uri",
    "created_at_flag",
)

REPO_COLUMNS: Final = (
    "did",
    "handle",
    "pds",
    "status",
    "rev",
    "commit_cid",
    "verified",
    "records",
    "records_by_collection",
    "bytes",
    "error",
    "fetched_at",
)


_collection: Final = attrgetter("collection")


def rfc3339(moment: datetime | None) -> str | None:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def counts_json(counts: dict[str, int]) -> str:
    """``records_by_collection`` as compact JSON text with sorted keys."""
    return json.dumps(counts, sort_keys=True, separators=(",", ":"))


def record_values(r: RecordRow) -> tuple[str | None, ...]:
    """A record row's values in ``RECORD_COLUMNS`` order, timestamps as RFC 3339 text."""
    return (
        r.did,
        r.collection,
        r.rkey,
        r.uri,
        r.cid,
        rfc3339(r.created_at),
        r.record,
        r.rev,
        r.commit_cid,
        r.pds,
        r.job_id,
        rfc3339(r.fetched_at),
        r.text,
        r.subject_uri,
        r.subject_did,
        r.reply_parent_uri,
        r.reply_root_uri,
        r.created_at_flag,
    )


def repo_values(r: RepoRow) -> tuple[str | int | None, ...]:
    """A repo row's values in ``REPO_COLUMNS`` order (text forms, see the module doc)."""
    return (
        r.did,
        r.handle,
        r.pds,
        r.status.value,
        r.rev,
        r.commit_cid,
        r.verified,
        r.records,
        counts_json(r.records_by_collection),
        r.bytes,
        r.error,
        rfc3339(r.fetched_at),
    )


class RecordsFile(Protocol):
    """One collection's record file of a batch, written chunk by chunk."""

    def write(self, rows: Sequence[RecordRow]) -> None:
        """Append rows."""

    def close(self) -> None:
        """Finish the file and fsync it."""

    def abandon(self) -> None:
        """Release the file after a failure (nothing is flushed); a no-op once closed."""


def record_chunks(results: Iterable[RepoResult]) -> Iterator[Sequence[RecordRow]]:
    """Every record of ``results`` in chunks: the rows held in memory together, then
    each chunk of each huge repo's spilled rows (read one at a time)."""
    results = list(results)
    in_memory = list(
        chain.from_iterable(r.records for r in results if isinstance(r.records, tuple))
    )
    if in_memory:
        yield in_memory
    for result in results:
        if not isinstance(result.records, tuple):
            yield from result.records.chunks()


def group_by_collection(records: Iterable[RecordRow]) -> dict[str, list[RecordRow]]:
    """Records grouped by collection, each group in input order."""
    groups: dict[str, list[RecordRow]] = {}
    # A repo's records come in key order, so in runs of one collection: one step a run.
    for collection, run in groupby(records, _collection):
        groups.setdefault(collection, []).extend(run)
    return groups
