"""``manifest.json``: what a finished dataset holds, written last and atomically.

Layout (``manifest_version`` 1)::

    {"manifest_version": 1, "tool": {"name": "bsky-backfill", "version": "0.1.0"},
     "job_id": "...", "format": "parquet", "started_at": "<RFC 3339>", "finished_at": "...",
     "config_sha256": "<hex>", "config": {... secrets removed ...},
     "counts": {"repos": n, "repos_by_status": {"complete": n, ...},
                "records": n, "records_by_collection": {"app.bsky.feed.post": n, ...}},
     "files": [{"path": "records/collection=.../part-b1.parquet", "kind": "records",
                "rows": n, "bytes": n, "sha256": "<hex>"}, ...]}

``config_sha256`` is the sha256 of the config as canonical JSON (keys sorted, no spaces,
UTF-8), so two jobs ran the same configuration iff their hashes match. ``files`` lists
every visible data file, sorted by path, relative to the dataset directory (``/``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from bsky_backfill import __version__
from bsky_backfill.sinks.durable import fsync_dir, write_atomically
from bsky_backfill.sinks.rows import rfc3339

__all__ = [
    "MANIFEST_NAME",
    "DatasetInventory",
    "FileEntry",
    "Manifest",
    "canonical_json",
    "file_entry",
    "manifest_document",
    "remove_manifest",
    "write_manifest",
]

MANIFEST_NAME: Final = "manifest.json"


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes (sorted keys, no spaces, UTF-8).

    Raises ``TypeError`` for anything JSON cannot hold (dates must already be strings).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the engine knows of a job; the sink adds the files and counts.

    ``config`` must be JSON-compatible with secrets already removed; it is checked when
    the manifest is built (``TypeError``), not at the end of the job.
    """

    job_id: str
    config: Mapping[str, Any]
    started_at: datetime
    finished_at: datetime

    def __post_init__(self) -> None:
        canonical_json(self.config)

    @property
    def config_sha256(self) -> str:
        """sha256 (hex) of the config's canonical JSON."""
        return hashlib.sha256(canonical_json(self.config)).hexdigest()


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One data file: path relative to the dataset, ``kind`` (records / repos / sqlite)."""

    path: str
    kind: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class DatasetInventory:
    """The visible dataset as a sink counts it, for the manifest."""

    files: tuple[FileEntry, ...]
    records_by_collection: Mapping[str, int] = field(default_factory=dict)
    repos_by_status: Mapping[str, int] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Sink-specific top-level manifest entries (e.g. DynamoDB's oversized records)."""


def file_entry(root: Path, path: Path, kind: str, rows: int) -> FileEntry:
    """Describe ``path`` (inside ``root``): size and sha256 read from disk."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return FileEntry(
        path=path.relative_to(root).as_posix(),
        kind=kind,
        rows=rows,
        bytes=path.stat().st_size,
        sha256=digest,
    )


def manifest_document(manifest: Manifest, fmt: str, inventory: DatasetInventory) -> bytes:
    """The ``manifest.json`` text (layout in the module docstring) for ``inventory``."""
    document = {
        "manifest_version": 1,
        "tool": {"name": "bsky-backfill", "version": __version__},
        "job_id": manifest.job_id,
        "format": fmt,
        "started_at": rfc3339(manifest.started_at),
        "finished_at": rfc3339(manifest.finished_at),
        "config_sha256": manifest.config_sha256,
        "config": manifest.config,
        "counts": {
            "repos": sum(inventory.repos_by_status.values()),
            "repos_by_status": dict(sorted(inventory.repos_by_status.items())),
            "records": sum(inventory.records_by_collection.values()),
            "records_by_collection": dict(sorted(inventory.records_by_collection.items())),
        },
        "files": [
            {"path": f.path, "kind": f.kind, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256}
            for f in sorted(inventory.files, key=lambda f: f.path)
        ],
        **inventory.extra,
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def write_manifest(root: Path, document: bytes) -> Path:
    """Write ``root/manifest.json`` atomically (temp file + rename + fsync); return its path."""
    path = root / MANIFEST_NAME
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(path, document)
    return path


def remove_manifest(root: Path) -> None:
    """Delete ``root/manifest.json`` durably, if present: the dataset is about to change."""
    path = root / MANIFEST_NAME
    if path.exists():
        path.unlink()
        fsync_dir(root)
