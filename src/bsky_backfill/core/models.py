"""The engine's data: per-DID states and the rows it writes (DESIGN.md's dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from bsky_backfill.core.spill import SpilledRows

__all__ = ["FINAL_STATES", "DidState", "RecordRow", "RepoResult", "RepoRow"]


class DidState(StrEnum):
    """Where one DID of a job stands. ``pending`` and ``in_progress`` are not final."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    NOT_FOUND = "not_found"
    TAKENDOWN = "takendown"
    DEACTIVATED = "deactivated"
    SUSPENDED = "suspended"
    INVALID_DID = "invalid_did"
    FAILED = "failed"


FINAL_STATES = frozenset(DidState) - {DidState.PENDING, DidState.IN_PROGRESS}


class RecordRow(NamedTuple):
    """One kept record, as every sink writes it (``record`` is the atproto JSON text).

    A named tuple rather than a dataclass: an engine makes millions, and a tuple is built
    in a third of the time and turned into columns at C speed (``zip(*rows)``).
    """

    did: str
    collection: str
    rkey: str
    uri: str
    cid: str
    created_at: datetime | None
    record: str
    rev: str
    commit_cid: str
    pds: str
    job_id: str
    fetched_at: datetime
    text: str | None = None
    subject_uri: str | None = None
    subject_did: str | None = None
    reply_parent_uri: str | None = None
    reply_root_uri: str | None = None
    created_at_flag: str | None = None
    """Why ``created_at`` was not taken from ``createdAt``: ``missing``, ``malformed``,
    ``future`` (then the TID's moment is used), or None when it was."""


@dataclass(frozen=True, slots=True)
class RepoRow:
    """One DID's outcome in the job."""

    did: str
    status: DidState
    handle: str | None = None
    pds: str | None = None
    rev: str | None = None
    commit_cid: str | None = None
    verified: str | None = None
    records: int = 0
    records_by_collection: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    error: str | None = None
    fetched_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RepoResult:
    """Everything one DID contributes to the dataset: written together, exactly once."""

    repo: RepoRow
    records: tuple[RecordRow, ...] | SpilledRows = ()
    """The kept records: in memory, or on disk in chunks for a huge repo."""

    def close(self) -> None:
        """Release spilled rows (their file); a no-op for rows in memory."""
        if not isinstance(self.records, tuple):
            self.records.close()
