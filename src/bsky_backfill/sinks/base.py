"""The sink interface: outputs that make each DID's rows visible exactly once.

A *batch* is a set of DIDs whose results the engine writes together. Its id is chosen by the
engine: 1-64 characters of ``[A-Za-z0-9_-]`` starting with a letter or digit, unique within
a dataset, never reused once published (a discarded id may be reused).

Exactly-once protocol (the sink's half below; the engine and the state store do the rest):

1. ``stage(batch, results, supersedes)`` writes the batch's record and repo rows durably
   (fsync) where dataset readers do not look. Calling it again for the same batch
   replaces what was staged (after a crash, or a failed write). Staging a batch that is
   already published is refused (``ValueError``): it would duplicate or destroy rows.
2. The engine commits the batch in the state store: its DIDs become final there, and the
   store records which batch holds each DID's rows.
3. ``publish(batch)`` makes the staged rows visible, atomically per file (one rename each;
   SQLite: one transaction), and removes the rows the batch supersedes. Idempotent: after
   a crash part-way it finishes the work; for a batch no longer staged it does nothing.
4. ``finish(manifest)`` writes ``manifest.json`` last, atomically, once no batch is staged.

Recovery, before taking new work after a crash at any instant::

    for batch in sink.staged_batches():
        sink.publish(batch) if store.committed(batch) else sink.discard(batch)

A crash between 1 and 2 leaves the batch staged but uncommitted: it is discarded and its
DIDs, still pending in the store, are done again. A crash during or after 2 leaves it
committed: ``publish`` finishes it. So every DID's rows become visible exactly once,
together with its final state. Recovery may publish in any order (see ``supersedes``).

Re-runs: ``supersedes`` maps each DID of the new batch that already has rows in the
dataset to the batch holding them (the store knows it). ``publish`` removes those rows in
the same step that shows the new ones, from the old batch whether it is published or
still staged, so order never resurrects superseded rows. Parquet and JSONL files are
immutable: affected files are rewritten without those DIDs (copy-on-write) and renamed
over the originals only after every rewrite is written, so a failed write changes nothing.

Visibility to readers: rows are visible only once published; a batch being published may
be visible in part (per file) for an instant. ``publish`` deletes ``manifest.json``: a
dataset that has one is complete and was not changed since; one without is being written.

Failures: any failed write (disk full, read-only file system, permissions, I/O error)
raises ``SinkWriteFailed`` naming the path; nothing half-written is visible, and the same
call succeeds once the cause is fixed. Misuse of the protocol (a bad batch id, a batch
superseding itself, staging a published batch, finishing with batches staged) raises
``ValueError``.

Threads: ``Sink`` methods block (disk I/O and encoding); each instance serialises its calls
with a lock, so it may be shared by threads. ``AsyncSink`` runs them in worker threads.
One process writes a dataset at a time.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

from bsky_backfill.aio import thread_to_the_end
from bsky_backfill.core.models import RepoResult
from bsky_backfill.errors import SinkWriteFailed
from bsky_backfill.sinks.manifest import (
    DatasetInventory,
    Manifest,
    manifest_document,
    write_manifest,
)

__all__ = [
    "AsyncSink",
    "LocalSink",
    "Sink",
    "SinkWriteFailed",
    "check_batch_id",
    "dids_by_batch",
    "write_errors",
]

_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_batch_id(batch_id: str) -> str:
    """Return ``batch_id`` if it is a valid batch id (see the module docstring).

    Raises ``ValueError`` otherwise: ids become file names, so they are checked strictly.
    """
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise ValueError(f"invalid batch id {batch_id!r}: expected 1-64 of [A-Za-z0-9_-]")
    return batch_id


def dids_by_batch(supersedes: Mapping[str, str]) -> dict[str, list[str]]:
    """``{DID: old batch}`` turned round: ``{old batch: [DID, ...]}``, DIDs sorted."""
    by_batch: dict[str, list[str]] = {}
    for did, old in sorted(supersedes.items()):
        by_batch.setdefault(old, []).append(did)
    return by_batch


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Translate ``OSError`` raised inside into ``SinkWriteFailed`` (the one place that does).

    The error names the file the OS names, else ``path``: wrap the narrowest step that
    knows its file (pyarrow's errors name none). Other exceptions, and a
    ``SinkWriteFailed`` from an inner ``write_errors``, pass through.
    """
    try:
        yield
    except OSError as e:
        where = str(e.filename) if e.filename else str(path)
        code = e.errno if isinstance(e.errno, int) and e.errno else None
        reason = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})" if code else str(e)
        raise SinkWriteFailed(
            f"cannot write the dataset at {where}: {reason}", path=where, errno=code
        ) from e


class Sink(ABC):
    """A dataset output following the exactly-once protocol of this module.

    Subclasses implement the ``_`` hooks; the public methods check arguments, take the
    instance's lock and translate failures (``_failures``). ``location`` names the
    dataset for people: a directory, or an ``s3://`` prefix.
    """

    format: ClassVar[str]
    """The ``storage.type`` this sink serves, written to the manifest."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._lock = threading.Lock()

    def stage(
        self,
        batch_id: str,
        results: Sequence[RepoResult],
        supersedes: Mapping[str, str] | None = None,
    ) -> None:
        """Write ``results`` durably, invisible to readers, replacing any earlier staging.

        ``supersedes`` maps DID -> the batch holding its previous rows, removed at publish.
        Raises ``ValueError`` for a bad or published batch id or a batch superseding
        itself; ``SinkWriteFailed`` if writing fails (then nothing is left staged).
        """
        check_batch_id(batch_id)
        olds = {did: check_batch_id(old) for did, old in (supersedes or {}).items()}
        if batch_id in olds.values():
            raise ValueError(f"batch {batch_id} cannot supersede its own rows")
        with self._lock, self._failures():
            if self._is_published(batch_id):
                raise ValueError(f"batch {batch_id} is already published: use a new batch id")
            self._stage(batch_id, results, olds)

    def publish(self, batch_id: str) -> None:
        """Make a staged batch visible and remove the rows it supersedes. Idempotent."""
        check_batch_id(batch_id)
        with self._lock, self._failures():
            self._publish(batch_id)

    def discard(self, batch_id: str) -> None:
        """Delete a staged batch (never published rows). Idempotent; published rows stay."""
        check_batch_id(batch_id)
        with self._lock, self._failures():
            self._discard(batch_id)

    def staged_batches(self) -> set[str]:
        """The ids of batches staged (completely or not) and not yet published or discarded."""
        with self._lock, self._failures():
            return self._staged_batches()

    def finish(self, manifest: Manifest) -> str:
        """Write ``manifest.json`` describing the visible dataset; return where it is.

        Raises ``ValueError`` while batches are staged (publish or discard them first).
        """
        with self._lock, self._failures():
            if staged := self._staged_batches():
                raise ValueError(f"cannot finish with batches staged: {sorted(staged)}")
            return self._write_manifest(manifest_document(manifest, self.format, self._inventory()))

    @abstractmethod
    def _failures(self) -> AbstractContextManager[None]:
        """Translate the storage's failures raised inside into ``SinkWriteFailed`` (or a
        ``StorageRefused`` for good); everything else passes through."""

    @abstractmethod
    def _write_manifest(self, document: bytes) -> str:
        """Store ``manifest.json`` atomically; return where it is."""

    @abstractmethod
    def _is_published(self, batch_id: str) -> bool:
        """Whether rows of ``batch_id`` were published (as far as can be told)."""

    @abstractmethod
    def _stage(
        self, batch_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> None: ...

    @abstractmethod
    def _publish(self, batch_id: str) -> None: ...

    @abstractmethod
    def _discard(self, batch_id: str) -> None: ...

    @abstractmethod
    def _staged_batches(self) -> set[str]: ...

    @abstractmethod
    def _inventory(self) -> DatasetInventory:
        """The visible dataset's files (sha256, rows) and counts, for the manifest."""


class LocalSink(Sink):
    """A sink writing into a local directory, ``path``; OS errors become ``SinkWriteFailed``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(str(path))
        self.path = Path(path)

    def _failures(self) -> AbstractContextManager[None]:
        return write_errors(self.path)

    def _write_manifest(self, document: bytes) -> str:
        return str(write_manifest(self.path, document))


class AsyncSink:
    """A ``Sink`` to await: each call runs in a worker thread (``asyncio.to_thread``).

    A thread cannot be stopped: a cancelled caller waits for its call to end before the
    cancellation goes on, so nothing of a cancelled job is still writing when it is
    resumed. Every protocol step may be repeated, so the caller retries or recovers as
    after a crash.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def stage(
        self,
        batch_id: str,
        results: Sequence[RepoResult],
        supersedes: Mapping[str, str] | None = None,
    ) -> None:
        """``Sink.stage`` in a thread."""
        await thread_to_the_end(self.sink.stage, batch_id, results, supersedes)

    async def publish(self, batch_id: str) -> None:
        """``Sink.publish`` in a thread."""
        await thread_to_the_end(self.sink.publish, batch_id)

    async def discard(self, batch_id: str) -> None:
        """``Sink.discard`` in a thread."""
        await thread_to_the_end(self.sink.discard, batch_id)

    async def staged_batches(self) -> set[str]:
        """``Sink.staged_batches`` in a thread."""
        return await thread_to_the_end(self.sink.staged_batches)

    async def finish(self, manifest: Manifest) -> str:
        """``Sink.finish`` in a thread."""
        return await thread_to_the_end(self.sink.finish, manifest)
