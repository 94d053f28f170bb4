"""The job store's values: job and batch states, jobs, claims, recoveries, batch ids.

Per-DID states are :class:`bsky_backfill.core.models.DidState`; the rows a DID ends with
are :class:`bsky_backfill.core.models.RepoRow`. Everything here is immutable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from bsky_backfill.core.models import DidState

__all__ = [
    "UNAVAILABLE_STATES",
    "BatchState",
    "Claim",
    "Job",
    "JobState",
    "Recovery",
    "format_batch_id",
    "host_of",
    "parse_batch_id",
]

UNAVAILABLE_STATES: Final = frozenset(
    {
        DidState.NOT_FOUND,
        DidState.TAKENDOWN,
        DidState.DEACTIVATED,
        DidState.SUSPENDED,
        DidState.INVALID_DID,
    }
)
"""Final states that say the account has no readable repo (DESIGN.md's ``unavailable``)."""

_BATCH_ID: Final = re.compile(r"[0-9]{10}")


class JobState(StrEnum):
    """Where a whole job stands (the API's ``state``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    """A batch's life: ``open`` (id issued, rows being staged) -> ``committed`` (its DIDs'
    final states are stored) -> ``published`` (the sink made it visible). A recovery turns
    every ``open`` batch into ``abandoned``: its staged rows are discarded, never published."""

    OPEN = "open"
    COMMITTED = "committed"
    PUBLISHED = "published"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class Job:
    """One backfill job. ``started_at`` is when its current run began (a resumed run keeps
    it, a re-run of a finished job resets it); ``finished_at`` is None until it ends."""

    job_id: str
    name: str
    config_text: str
    config_hash: str
    state: JobState
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A DID handed to a worker by ``claim``.

    ``attempts`` counts this one (1 on the first claim), so the worker can enforce
    ``max_retries`` across restarts. ``pds`` and ``handle`` are the stored identity, if
    any. ``superseded_batch_id`` is set when a re-run reopened the DID: the sink must drop
    that older batch's rows for this DID when it publishes the new ones.
    """

    did: str
    attempts: int
    pds: str | None = None
    handle: str | None = None
    superseded_batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``recover`` found, for the sink to act on before new work starts.

    ``committed_unpublished``: batches whose DIDs are final in the store but which the sink
    has not published — publish each (idempotently), then ``mark_published``.
    ``known_batches``: every committed or published batch id; a staged batch not in it was
    never committed and must be discarded. ``abandoned``: batch ids that were open until
    this recovery (now abandoned). ``released``: DIDs moved from in_progress to pending.
    """

    committed_unpublished: tuple[str, ...]
    known_batches: frozenset[str]
    abandoned: tuple[str, ...] = ()
    released: int = 0


def format_batch_id(seq: int) -> str:
    """The public id of a job's ``seq``-th batch: ten digits, so ids sort as numbers do."""
    if not 0 < seq < 10**10:
        raise ValueError(f"batch number {seq} out of range")
    return f"{seq:010d}"


def parse_batch_id(batch_id: str) -> int | None:
    """The batch number in ``batch_id``, or None if it is not an id the store issues."""
    return int(batch_id) if _BATCH_ID.fullmatch(batch_id) and int(batch_id) > 0 else None


def host_of(pds: str) -> str:
    """The scheduling key of a PDS endpoint: its ``host[:port]``, lowercased.

    Two endpoints on one server (different paths) share a host and so a rate limit.
    Raises ``ValueError`` for a string with no host.
    """
    host = urlsplit(pds).netloc.rpartition("@")[2].lower()
    if not host:
        raise ValueError(f"PDS endpoint {pds!r} has no host")
    return host
