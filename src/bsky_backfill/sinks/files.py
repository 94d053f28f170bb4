"""Sinks that write one immutable file per batch and table (Parquet, JSONL).

Layout under the dataset directory ``<path>``::

    records/<partition>/part-<batch>.<ext>     visible: one file per collection and batch
    repos/part-<batch>.<ext>                   visible: one file per batch
    manifest.json                              written by finish(), deleted by publish()
    _staging/<batch>.tmp/                      a batch being staged (incomplete)
    _staging/<batch>/data/{records,repos}/...  a staged batch: the files publish moves
    _staging/<batch>/supersedes.json           {old batch: [DID, ...]}
    _staging/<batch>/rewrite/...               copies of superseded files without those DIDs

Readers look under ``records/`` and ``repos/``; ``_staging`` is outside both, and its
leading ``_`` makes pyarrow and Spark skip it even when a reader globs the whole directory.

Staging writes into ``<batch>.tmp``, fsyncs every file and directory, then renames it to
``<batch>``: a complete staged batch appears at once. Publishing first writes every
rewrite (the only step that needs space), creates the target directories, then renames
each file into place, deletes files whose rows are all superseded, fsyncs, and removes
the staging directory. Each step checks what is already done, so repeating ``publish``
after a crash anywhere finishes the job. Small batches make small files; compacting them
is left to a later tool.
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import ClassVar

from bsky_backfill.atproto.syntax import is_valid_nsid
from bsky_backfill.core.models import RepoResult, RepoRow
from bsky_backfill.sinks.base import LocalSink, dids_by_batch, write_errors
from bsky_backfill.sinks.durable import fsync_dir, fsync_file, make_dirs, remove_tree
from bsky_backfill.sinks.manifest import DatasetInventory, FileEntry, file_entry, remove_manifest
from bsky_backfill.sinks.rows import RecordsFile, group_by_collection, record_chunks

__all__ = ["STAGING_DIR", "FileSink"]

STAGING_DIR = "_staging"
_INCOMPLETE = ".tmp"


class FileSink(LocalSink):
    """The staging / publish / supersede machinery shared by file-per-batch sinks.

    Subclasses set ``suffix`` and ``partition_prefix`` and implement the four ``_write`` /
    ``_read`` hooks; every write hook must leave its file fsynced.
    """

    suffix: ClassVar[str]
    """File extension, with the dot."""
    partition_prefix: ClassVar[str]
    """Prefix of a collection's directory name under ``records/``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._staging = self.path / STAGING_DIR

    # -- hooks ------------------------------------------------------------------------

    @abstractmethod
    def _open_records(self, dest: Path) -> RecordsFile:
        """A new file at ``dest`` for one collection's record rows, written chunk by chunk."""

    @abstractmethod
    def _write_repos(self, dest: Path, rows: Sequence[RepoRow]) -> None:
        """Write repo rows to ``dest`` and fsync it."""

    @abstractmethod
    def _rewrite_without(self, src: Path, dest: Path, dids: frozenset[str]) -> int | None:
        """Copy ``src`` to ``dest`` without the rows of ``dids``; fsync ``dest``.

        Returns None (writing nothing) if ``src`` has no such rows; 0 (writing nothing)
        if no row would be left; otherwise the number of rows written.
        """

    @abstractmethod
    def _read_file_stats(self, path: Path, kind: str) -> tuple[int, Counter[str]]:
        """``(rows, statuses)`` of a visible file; statuses only for ``kind == "repos"``."""

    # -- layout -------------------------------------------------------------------------

    def _part(self, batch_id: str) -> str:
        return f"part-{batch_id}{self.suffix}"

    def _records_dir(self, collection: str) -> str:
        if not is_valid_nsid(collection):
            raise ValueError(f"record collection {collection!r} is not a valid NSID")
        return f"records/{self.partition_prefix}{collection}"

    def _batch_files(self, root: Path, batch_id: str) -> Iterator[Path]:
        """The data files of ``batch_id`` under ``root`` (the dataset or a staged batch)."""
        part = self._part(batch_id)
        yield from sorted(root.glob(f"records/{self.partition_prefix}*/{part}"))
        repos = root / "repos" / part
        if repos.is_file():
            yield repos

    # -- protocol -----------------------------------------------------------------------

    def _is_published(self, batch_id: str) -> bool:
        return (self.path / "repos" / self._part(batch_id)).exists()

    def _stage(
        self, batch_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> None:
        building = self._staging / f"{batch_id}{_INCOMPLETE}"
        staged = self._staging / batch_id
        remove_tree(building)
        remove_tree(staged)
        try:
            part = self._part(batch_id)
            data = building / "data"
            self._write_record_files(data, part, results)
            if results:
                make_dirs(data / "repos")
                with write_errors(data / "repos" / part):
                    self._write_repos(data / "repos" / part, [r.repo for r in results])
                fsync_dir(data / "repos")
            make_dirs(building)
            if supersedes:
                by_batch = dids_by_batch(supersedes)
                (building / "supersedes.json").write_text(json.dumps(by_batch))
                fsync_file(building / "supersedes.json")
            fsync_dir(building)
            os.rename(building, staged)
        except BaseException:
            _remove_quietly(building)
            raise
        fsync_dir(self._staging)

    def _write_record_files(self, data: Path, part: str, results: Sequence[RepoResult]) -> None:
        """One file per collection, written chunk by chunk: a huge repo's spilled rows are
        never all in memory (see ``core.spill``)."""
        files: dict[Path, RecordsFile] = {}
        try:
            for chunk in record_chunks(results):
                for collection, rows in group_by_collection(chunk).items():
                    dest = data / self._records_dir(collection) / part
                    with write_errors(dest):
                        if dest not in files:
                            make_dirs(dest.parent)
                            files[dest] = self._open_records(dest)
                        files[dest].write(rows)
            for dest, file in files.items():
                with write_errors(dest):
                    file.close()
                fsync_dir(dest.parent)
        finally:
            for file in files.values():
                file.abandon()

    def _publish(self, batch_id: str) -> None:
        staged = self._staging / batch_id
        if not staged.is_dir():
            if (self._staging / f"{batch_id}{_INCOMPLETE}").exists():
                raise ValueError(f"batch {batch_id} was not completely staged: stage or discard")
            return
        remove_manifest(self.path)
        data = staged / "data"
        moves = [
            (src, self.path / src.relative_to(data))
            for src in sorted(data.rglob(f"*{self.suffix}"))
        ]
        deletions = []
        supersedes = staged / "supersedes.json"
        if supersedes.exists():
            for old, dids in json.loads(supersedes.read_text()).items():
                # Old rows may be visible, or still staged when recovery publishes out of order.
                for root in (self.path, self._staging / old / "data"):
                    for target in self._batch_files(root, old):
                        rewrite = staged / "rewrite" / target.relative_to(self.path)
                        make_dirs(rewrite.parent)
                        with write_errors(rewrite):
                            kept = self._rewrite_without(target, rewrite, frozenset(dids))
                        if kept:
                            moves.append((rewrite, target))
                        elif kept == 0:
                            deletions.append(target)
        for _, dest in moves:
            make_dirs(dest.parent)
        for src, dest in moves:
            os.replace(src, dest)
        for target in deletions:
            target.unlink(missing_ok=True)
        for directory in {dest.parent for _, dest in moves} | {t.parent for t in deletions}:
            fsync_dir(directory)
        remove_tree(staged)

    def _discard(self, batch_id: str) -> None:
        remove_tree(self._staging / f"{batch_id}{_INCOMPLETE}")
        remove_tree(self._staging / batch_id)

    def _staged_batches(self) -> set[str]:
        if not self._staging.is_dir():
            return set()
        return {p.name.removesuffix(_INCOMPLETE) for p in self._staging.iterdir() if p.is_dir()}

    def _inventory(self) -> DatasetInventory:
        files: list[FileEntry] = []
        by_collection: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        pattern = f"part-*{self.suffix}"
        for path in sorted(self.path.glob(f"records/{self.partition_prefix}*/{pattern}")):
            rows, _ = self._read_file_stats(path, "records")
            by_collection[path.parent.name.removeprefix(self.partition_prefix)] += rows
            files.append(file_entry(self.path, path, "records", rows))
        for path in sorted(self.path.glob(f"repos/{pattern}")):
            rows, statuses = self._read_file_stats(path, "repos")
            by_status.update(statuses)
            files.append(file_entry(self.path, path, "repos", rows))
        return DatasetInventory(tuple(files), dict(by_collection), dict(by_status))


def _remove_quietly(path: Path) -> None:
    """Best-effort cleanup after a failed write (the file system may be full or read-only)."""
    with suppress(OSError):
        remove_tree(path)
