"""The job store's interface, split by consumer, and the exactly-once batch protocol.

Small protocols, one per consumer: the API and CLI read jobs (:class:`JobCatalog`) and
progress (:class:`JobProgress`); the planner and workers move DIDs (:class:`DidQueue`) and
commit output (:class:`BatchLedger`); the identity cache persists through
:class:`IdentityStore`. :class:`JobStore` is all of them, what ``SqlJobStore`` provides.
Every method is a coroutine that raises ``StoreUnavailable`` (retryable) or ``StoreError``
(not), and ``JobNotFound`` for an unknown ``job_id`` (except ``get_job``).

DID life (``DidState``)::

    pending --claim--> in_progress --commit_batch--> complete | unavailable | failed
       ^                   |  release, retry_later, recover
       +-------------------+
    final --reopen--> pending   (a re-run of a finished job, for a repo that changed)

Attempts: ``claim`` counts one; ``release`` gives it back (the worker chose to stop:
cancellation, shutdown); ``retry_later`` and ``recover`` keep it — a repo that kills the
process every time it is read must still run out of ``max_retries``.

Exactly-once output (the batch protocol). A sink writes a batch of DIDs' rows so that
they become visible exactly once, together with the DIDs' final states:

1. ``batch_id = await store.next_batch_id(job_id, worker_id=w)`` — a new id, monotonic per
   job (ten digits: ids sort as numbers), recorded as ``open`` and owned by ``w``.
2. The sink stages the batch's rows under ``batch_id``, invisibly (e.g. a temporary file).
3. ``await store.commit_batch(job_id, batch_id, repo_rows)`` — ONE transaction: every DID
   of the batch gets its final state and outcome (status, rev, commit_cid, handle, pds,
   records, records_by_collection, bytes, verified, error, fetched_at, batch) and the batch
   becomes ``committed``. It refuses (``BatchRejected``, nothing written) a batch that is
   not open, or that holds a DID no longer claimed by the batch's worker (a recovery or
   another worker took it). After a refusal the sink discards the staged batch.
4. The sink publishes the staged batch (idempotent: publishing twice is harmless).
5. ``await store.mark_published(job_id, batch_id)``.

A crash between any two steps loses nothing and duplicates nothing. On restart, before
any new work, ``recovery = await store.recover(job_id)``: in_progress DIDs go back to
pending and open batches become ``abandoned``. Then the sink, for each batch it has staged:
publishes it and calls ``mark_published`` if it is in ``recovery.committed_unpublished``;
discards it if it is not in ``recovery.known_batches`` (it was never committed, so its
DIDs are pending again and will be fetched anew). A crash before step 3 leaves DIDs pending
and the staged rows discarded; after step 3, the rows are published exactly once.

``recover`` is for a job with no live workers (one machine, or all workers of a cluster
stopped): it takes back every claim. ``recover(job_id, worker_id=w)`` takes back only a
dead worker's claims and open batches while the others go on (the distributed runner).

Re-runs: ``repos`` yields each final DID's stored outcome (its ``rev``, to compare with
``getLatestCommit``); ``reopen`` makes changed DIDs pending again and remembers the batch
holding their old rows, which the next claim returns as ``Claim.superseded_batch_id`` and
``superseded(job_id, batch_id)`` lists for a committed batch: the sink drops those old rows
when it publishes the new ones.

Final states written outside a batch (``add_final``, ``fail``, ``finish_unavailable``)
have no output yet; ``repos(job_id, unbatched=True)`` lists them, and ``commit_batch``
accepts them (besides the worker's claimed DIDs) so their rows can be published once too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from bsky_backfill.atproto.identity import CachedIdentity
from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.state.model import Claim, Job, JobState, Recovery

__all__ = ["BatchLedger", "DidQueue", "IdentityStore", "JobCatalog", "JobProgress", "JobStore"]


class JobCatalog(Protocol):
    """Jobs: create, look up, list, and move through ``JobState``."""

    async def create_job(self, job_id: str, name: str, config_text: str, config_hash: str) -> Job:
        """Create a pending job. Idempotent for the same ``config_hash`` (returns the stored
        job, so a crashed start can be repeated); raises ``StoreError`` if ``job_id`` exists
        with another config."""
        ...

    async def get_job(self, job_id: str) -> Job | None:
        """The job, or None if there is none with this id."""
        ...

    async def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        ...

    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> Job:
        """Set the job's state and error. Entering ``running`` from ``pending`` sets
        ``started_at``; from a final state (a re-run) it sets ``started_at`` anew and
        clears ``finished_at``; ``running`` again (a resume) changes neither. Entering a
        final state sets ``finished_at``. Idempotent."""
        ...


class DidQueue(Protocol):
    """A job's DIDs: adding, identity, claiming, and every transition but ``commit_batch``."""

    async def add_dids(self, job_id: str, dids: Iterable[str]) -> int:
        """Add DIDs as pending; return how many were new. Idempotent: DIDs already in the
        job (in any state) and duplicates are ignored. Written in chunks, each its own
        transaction, so a crash midway leaves a prefix that a repeat call completes."""
        ...

    async def add_final(
        self, job_id: str, did: str, state: DidState, error: str | None = None
    ) -> bool:
        """Add ``did`` directly in a final ``state`` (an invalid DID, say), or finalize it
        if it is pending. False (no change) if it is in progress or already final."""
        ...

    async def set_identities(
        self, job_id: str, identities: Iterable[tuple[str, str | None, str]]
    ) -> None:
        """Store ``(did, handle, pds)`` for pending or in-progress DIDs, so that claims can
        be grouped by PDS host. Final DIDs are left alone. Idempotent."""
        ...

    async def unresolved(self, job_id: str, *, limit: int, after: str | None = None) -> list[str]:
        """Up to ``limit`` pending DIDs with no stored PDS, in DID order after ``after``
        (keyset paging for the planner that resolves them)."""
        ...

    async def claim(
        self, job_id: str, limit: int, *, worker_id: str, host: str | None = None
    ) -> list[Claim]:
        """Atomically move up to ``limit`` pending DIDs that are due (no ``not_before`` in
        the future) to in_progress for ``worker_id``, counting an attempt each; with
        ``host``, only DIDs whose PDS is on that host. Concurrent claimers (tasks,
        processes, machines) never get the same DID. No order is promised."""
        ...

    async def pending_hosts(self, job_id: str) -> dict[str, int]:
        """Claimable DIDs per PDS host (pending, due, identity known)."""
        ...

    async def release(
        self, job_id: str, dids: Iterable[str], *, worker_id: str | None = None
    ) -> int:
        """Give in-progress DIDs back (pending), returning their attempt; with ``worker_id``
        only that worker's. Others are ignored. Returns how many were released."""
        ...

    async def holders(self, job_id: str) -> list[str]:
        """The workers holding claims (in-progress DIDs) of the job, sorted."""
        ...

    async def retry_later(
        self,
        job_id: str,
        did: str,
        error_kind: str,
        error_detail: str,
        *,
        not_before: datetime | None = None,
        worker_id: str | None = None,
    ) -> bool:
        """Put a non-final DID back to pending with its last error, keeping its attempt;
        ``claim`` skips it until ``not_before``. False if the DID is final or absent, or,
        with ``worker_id``, not in progress for that worker (another took it back)."""
        ...

    async def fail(self, job_id: str, did: str, error_kind: str, error_detail: str) -> bool:
        """Make a non-final DID ``failed`` with the error. False if final or absent."""
        ...

    async def finish_unavailable(
        self, job_id: str, did: str, state: DidState, error: str | None = None
    ) -> bool:
        """Make a non-final DID unavailable (``not_found``, ``takendown``, ``deactivated``,
        ``suspended``, ``invalid_did``). False if final or absent; ``ValueError`` for
        another state."""
        ...

    async def superseded_of(self, job_id: str, dids: Iterable[str]) -> dict[str, str]:
        """``{did: batch id}`` of the rows each reopened DID's next batch must replace (for
        DIDs finalized outside a batch after a reopen, which no claim carried)."""
        ...

    async def reopen(self, job_id: str, dids: Iterable[str]) -> int:
        """Make final DIDs pending again for a re-run, with fresh attempts, remembering the
        batch that holds their current rows (see the module docstring). Non-final DIDs are
        ignored. Returns how many were reopened."""
        ...


class BatchLedger(Protocol):
    """The exactly-once batch protocol of the module docstring."""

    async def next_batch_id(self, job_id: str, *, worker_id: str) -> str:
        """Issue the job's next batch id, open and owned by ``worker_id``."""
        ...

    async def commit_batch(self, job_id: str, batch_id: str, repo_rows: Sequence[RepoRow]) -> None:
        """Step 3, in one transaction. Idempotent: committing a committed batch again with
        the same DIDs succeeds without change (a retry after a lost answer). Raises
        ``BatchRejected`` for a batch that is unknown, abandoned, committed with other
        DIDs, or holding a DID that is neither claimed by the batch's worker nor final
        without a batch; ``ValueError`` for a non-final status or a DID given twice."""
        ...

    async def mark_published(self, job_id: str, batch_id: str) -> None:
        """Step 5. Idempotent. Raises ``BatchRejected`` if the batch was never committed."""
        ...

    async def superseded(self, job_id: str, batch_id: str) -> dict[str, str]:
        """``{did: old batch id}`` for the batch's DIDs whose older rows it replaces."""
        ...

    async def recover(self, job_id: str, *, worker_id: str | None = None) -> Recovery:
        """Take back every claim and abandon every open batch of a job with no live workers,
        in one transaction, and say what the sink must publish or discard. Idempotent.

        With ``worker_id``: only that (dead) worker's claims and open batches, while other
        workers go on; ``abandoned`` then names the staged batches to discard (other
        workers' staged batches are not yet known to the store and must be kept)."""
        ...

    async def unpublished(self, job_id: str) -> list[str]:
        """Committed batches not yet marked published, oldest first: what a single publisher
        (the distributed coordinator) publishes while workers only stage and commit."""
        ...


class JobProgress(Protocol):
    """Read-only views: counts, per-host progress, stored outcomes."""

    async def counts(self, job_id: str) -> dict[DidState, int]:
        """DIDs per state; every state is a key (zero included)."""
        ...

    async def records_total(self, job_id: str) -> int:
        """Records kept over the job's complete DIDs."""
        ...

    async def host_counts(self, job_id: str) -> dict[str | None, dict[DidState, int]]:
        """DIDs per PDS host and state (only non-zero states); None: no PDS known."""
        ...

    def repos(self, job_id: str, *, unbatched: bool = False) -> AsyncIterator[RepoRow]:
        """Each final DID's stored outcome, in DID order, read in pages (no transaction is
        held between pages); with ``unbatched``, only those no batch has published."""
        ...


class IdentityStore(Protocol):
    """Persistence for the identity cache (shared by every job)."""

    async def load_identities(self, dids: Iterable[str], now: float) -> list[CachedIdentity]:
        """Stored entries for ``dids`` that have not expired at ``now`` (unix seconds)."""
        ...

    async def save_identities(self, entries: Iterable[CachedIdentity]) -> None:
        """Store entries, replacing any for the same DID. Idempotent."""
        ...

    async def expire_identities(self, now: float) -> int:
        """Delete entries expired at ``now``; return how many."""
        ...


class JobStore(JobCatalog, DidQueue, BatchLedger, JobProgress, IdentityStore, Protocol):
    """Everything the engine needs from its state store; closed with ``aclose``."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...
