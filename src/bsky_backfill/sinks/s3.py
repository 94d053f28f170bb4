"""S3ParquetSink: the Parquet dataset under ``s3://bucket/prefix``, same layout as local.

Objects under the prefix::

    records/collection=<nsid>/part-<batch>.parquet   visible, as ParquetSink writes them
    repos/part-<batch>.parquet
    manifest.json                                     written by finish(), deleted by publish()
    _staging/<batch>/data/{records,repos}/...         a staged batch's files
    _staging/<batch>/rewrite/...                      superseded files without those DIDs
    _staging/<batch>/staged.json                      written last: the batch is staged

S3 has no rename, so the protocol maps onto per-object atomicity instead:

- ``stage`` removes any earlier staging of the batch, uploads its files (multipart when
  large: S3 shows such an object only once complete), then ``staged.json`` listing them
  and the supersessions. Objects under ``_staging/<batch>/`` without ``staged.json`` are
  an incomplete staging: recovery discards it.
- ``publish`` deletes ``manifest.json``, uploads every rewrite of a superseded file first,
  then *moves* (server-side copy, then delete) each staged file and rewrite into place,
  deletes files whose rows are all superseded, and removes ``staged.json`` last. A move
  whose source is gone was done by an earlier attempt, and a file already rewritten has
  no superseded rows left, so repeating ``publish`` after a crash anywhere finishes it.
- ``finish`` uploads ``manifest.json`` last.

Every data object carries user metadata ``rows`` and ``sha256`` (and ``statuses`` for
repos files) set when it is written and kept by copies, so the manifest is built without
downloading the dataset. ``_staging`` starts with ``_``: Spark, pyarrow and DuckDB's hive
readers skip it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from bsky_backfill.atproto.syntax import is_valid_nsid
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.core.models import RepoResult
from bsky_backfill.errors import StorageMissing
from bsky_backfill.sinks.base import Sink, dids_by_batch
from bsky_backfill.sinks.manifest import MANIFEST_NAME, DatasetInventory, FileEntry
from bsky_backfill.sinks.parquet import (
    records_table,
    repos_table,
    table_kind,
    without_dids,
    write_parquet,
)
from bsky_backfill.sinks.rows import group_by_collection

__all__ = ["STAGED_MARKER", "S3ParquetSink"]

STAGED_MARKER: Final = "staged.json"
_STAGING: Final = "_staging"
_PARTITION: Final = "collection="


@dataclass(frozen=True, slots=True)
class _Staged:
    """``staged.json``: the batch's files (dataset paths) and ``{old batch: [DID, ...]}``."""

    files: list[str]
    supersedes: dict[str, list[str]]


class S3ParquetSink(Sink):
    """Writes the Parquet dataset into ``bucket``; see the module docstring."""

    format = "s3"

    def __init__(self, bucket: Bucket) -> None:
        super().__init__(bucket.uri)
        self.bucket = bucket

    def check(self) -> None:
        """Preflight: the bucket exists and the credentials may write and delete in it."""
        self.bucket.check_writable()

    # -- layout -------------------------------------------------------------------------

    @staticmethod
    def _part(batch_id: str) -> str:
        return f"part-{batch_id}.parquet"

    def _visible_files(self, batch_id: str) -> list[str]:
        """The published files of ``batch_id``: one exact lookup per collection folder."""
        part = self._part(batch_id)
        candidates = [f"{folder}/{part}" for folder in self.bucket.folders("records/")]
        candidates.append(f"repos/{part}")
        return [path for path in candidates if self.bucket.exists(path)]

    def _marker(self, batch_id: str) -> _Staged | None:
        try:
            document = json.loads(self.bucket.get(f"{_STAGING}/{batch_id}/{STAGED_MARKER}"))
        except StorageMissing:
            return None
        return _Staged(list(document["files"]), dict(document["supersedes"]))

    # -- protocol -----------------------------------------------------------------------

    def _failures(self) -> AbstractContextManager[None]:
        # ``Bucket`` translates every storage failure itself, naming the object.
        return nullcontext()

    def _is_published(self, batch_id: str) -> bool:
        return self.bucket.exists(f"repos/{self._part(batch_id)}")

    def _stage(
        self, batch_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> None:
        root = f"{_STAGING}/{batch_id}"
        self._discard(batch_id)
        part = self._part(batch_id)
        files = []
        records = group_by_collection(r for result in results for r in result.records)
        for collection, rows in records.items():
            if not is_valid_nsid(collection):
                raise ValueError(f"record collection {collection!r} is not a valid NSID")
            path = f"records/{_PARTITION}{collection}/{part}"
            self._upload(f"{root}/data/{path}", records_table(rows))
            files.append(path)
        if results:
            self._upload(f"{root}/data/repos/{part}", repos_table([r.repo for r in results]))
            files.append(f"repos/{part}")
        marker = _Staged(files, dids_by_batch(supersedes))
        self.bucket.put(f"{root}/{STAGED_MARKER}", json.dumps(asdict(marker)).encode())

    def _publish(self, batch_id: str) -> None:
        root = f"{_STAGING}/{batch_id}"
        marker = self._marker(batch_id)
        if marker is None:
            if any(True for _ in self.bucket.objects(f"{root}/")):
                raise ValueError(f"batch {batch_id} was not completely staged: stage or discard")
            return
        self.bucket.delete([MANIFEST_NAME])
        moves = [(f"{root}/data/{path}", path) for path in marker.files]
        deletions = []
        for old, dids in marker.supersedes.items():
            for target in self._targets_of(old):
                rewrite = f"{root}/rewrite/{target}"
                kept = self._rewrite_without(target, rewrite, frozenset(dids))
                if kept:
                    moves.append((rewrite, target))
                elif kept == 0:
                    deletions.append(target)
        for src, dest in moves:
            self._move(src, dest)
        self.bucket.delete(deletions)
        leftovers = [o.path for o in self.bucket.objects(f"{root}/")]
        self.bucket.delete(p for p in leftovers if not p.endswith(f"/{STAGED_MARKER}"))
        self.bucket.delete([f"{root}/{STAGED_MARKER}"])

    def _targets_of(self, old: str) -> list[str]:
        """Where ``old``'s rows are: its published files, or still its staged ones
        (recovery may publish batches out of order)."""
        targets = self._visible_files(old)
        staged = self._marker(old)
        if staged is not None:
            root = f"{_STAGING}/{old}/data"
            for path in staged.files:
                if self.bucket.exists(f"{root}/{path}"):
                    targets.append(f"{root}/{path}")
        return targets

    def _discard(self, batch_id: str) -> None:
        root = f"{_STAGING}/{batch_id}"
        self.bucket.delete([f"{root}/{STAGED_MARKER}"])
        self.bucket.delete([o.path for o in self.bucket.objects(f"{root}/")])

    def _staged_batches(self) -> set[str]:
        return {path.rsplit("/", 1)[-1] for path in self.bucket.folders(f"{_STAGING}/")}

    def _inventory(self) -> DatasetInventory:
        files: list[FileEntry] = []
        by_collection: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        for kind in ("records", "repos"):
            for info in self.bucket.objects(f"{kind}/"):
                if not info.path.endswith(".parquet"):
                    continue
                meta = self.bucket.metadata(info.path) or {}
                rows = int(meta.get("rows", 0))
                if kind == "records":
                    by_collection[info.path.split("/")[1].removeprefix(_PARTITION)] += rows
                else:
                    by_status.update(json.loads(meta.get("statuses", "{}")))
                files.append(FileEntry(info.path, kind, rows, info.size, meta.get("sha256", "")))
        return DatasetInventory(tuple(files), dict(by_collection), dict(by_status))

    def _write_manifest(self, document: bytes) -> str:
        self.bucket.put(MANIFEST_NAME, document)
        return self.bucket.uri_of(MANIFEST_NAME)

    # -- objects ------------------------------------------------------------------------

    def _upload(self, path: str, table: pa.Table) -> None:
        kind = table_kind(path)
        body = io.BytesIO()
        write_parquet(table, body, kind)
        data = body.getvalue()
        metadata = {"rows": str(table.num_rows), "sha256": hashlib.sha256(data).hexdigest()}
        if kind == "repos":
            statuses = Counter(table.column("status").to_pylist())
            metadata["statuses"] = json.dumps(dict(sorted(statuses.items())))
        self.bucket.put(path, data, metadata)

    def _rewrite_without(self, src: str, dest: str, dids: frozenset[str]) -> int | None:
        """Upload ``src`` less the rows of ``dids`` to ``dest`` (see ``FileSink``'s hook)."""
        try:
            table = pq.read_table(io.BytesIO(self.bucket.get(src)))
        except StorageMissing:
            return None
        kept = without_dids(table, dids)
        if kept is None:
            return None
        if kept.num_rows:
            self._upload(dest, kept)
        return int(kept.num_rows)

    def _move(self, src: str, dest: str) -> None:
        try:
            self.bucket.copy(src, dest)
        except StorageMissing:
            return  # moved by an earlier attempt
        self.bucket.delete([src])
