"""Which records of a dataset a dispatch sends: read the Parquet dataset's records in
file order, keep the wanted collections, window, URI list and sample.

Collections, window and URI list are pushed down to Arrow as one filter; the sample is a
hash of the seed and the URI (:func:`in_sample`), so it needs no state and picks the same
records on every run. The scan is single-threaded so that records come in the same order
every time, which keeps ``max_records`` cuts and batch contents the same across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pyarrow.dataset as ds

from bsky_backfill.dispatch.config import RecordSelection, Sample, UriList
from bsky_backfill.errors import ConfigError
from bsky_backfill.sinks.rows import rfc3339
from bsky_backfill.sources.files import read_values

__all__ = ["SelectedRecord", "check_dataset", "in_sample", "read_uri_list", "select_records"]

_COLUMNS: Final = ("uri", "cid", "did", "collection", "rkey", "created_at", "record")
_HASH_SPACE: Final = 2**64
_URIS_KEY: Final = "dispatch.select.uris.path"


@dataclass(frozen=True, slots=True)
class SelectedRecord:
    """One record version to send: ``uri`` + ``cid`` identify it (what receivers dedupe
    by); ``record`` is the record's JSON text as stored in the dataset."""

    uri: str
    cid: str
    did: str
    collection: str
    rkey: str
    created_at: datetime | None
    record: str

    @property
    def key(self) -> tuple[str, str]:
        """``(uri, cid)``: the identity bookkeeping and receivers use."""
        return self.uri, self.cid

    def item(self) -> dict[str, Any]:
        """The record as a JSON object for a receiver (``record`` parsed)."""
        return {
            "uri": self.uri,
            "cid": self.cid,
            "did": self.did,
            "collection": self.collection,
            "rkey": self.rkey,
            "created_at": rfc3339(self.created_at),
            "record": json.loads(self.record),
        }


def in_sample(uri: str, sample: Sample) -> bool:
    """True if ``uri`` is in ``sample``: the first 8 bytes of SHA-256(seed, uri), as a
    fraction of 2**64, are below the proportion. Pure: same answer on every run."""
    digest = hashlib.sha256(f"{sample.seed}\0{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < sample.proportion * _HASH_SPACE


def read_uri_list(spec: UriList) -> frozenset[str]:
    """The URIs listed in ``spec``'s file or folder of Parquet files.

    Raises ``ConfigError`` (key ``dispatch.select.uris.path``) when it does not exist or
    lacks the column.
    """
    path = Path(spec.path)
    if not path.exists():
        raise ConfigError(f"URI list {path} does not exist", key=_URIS_KEY)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    try:
        return frozenset(uri for file in files for uri in read_values(file, spec.column))
    except ConfigError as exc:
        exc.key = _URIS_KEY  # the shared reader names the backfill's DID source
        raise


def _filter(spec: RecordSelection, uris: frozenset[str] | None) -> ds.Expression:
    expression = ds.field("collection").isin(list(spec.collections))
    if spec.time_range is not None:
        expression &= ds.field("created_at") >= spec.time_range.start_date
        if spec.time_range.end_date is not None:
            expression &= ds.field("created_at") < spec.time_range.end_date
    if uris is not None:
        expression &= ds.field("uri").isin(sorted(uris))
    return expression


def check_dataset(dataset: Path) -> Path:
    """The ``records`` folder of the dataset at ``dataset``; ``ConfigError`` if missing."""
    records = dataset / "records"
    if not records.is_dir():
        raise ConfigError(
            f"no dataset at {dataset} (expected {records}/collection=<nsid>/*.parquet)",
            key="dispatch.dataset",
        )
    return records


def select_records(
    dataset: Path,
    spec: RecordSelection,
    uris: frozenset[str] | None = None,
    *,
    chunk_rows: int = 2048,
) -> Iterator[list[SelectedRecord]]:
    """The records of the dataset at ``dataset`` that ``spec`` selects (``uris``: the
    URI list already read with :func:`read_uri_list`, None for none), in chunks of at
    most ``chunk_rows`` (some may be empty), in dataset file order. Lazy: reads as it is
    iterated; ``max_records`` is the sender's concern (it counts only new records).

    Raises ``ConfigError`` when there is no Parquet dataset there.
    """
    scanner = ds.dataset(check_dataset(dataset), format="parquet", partitioning="hive").scanner(
        columns=list(_COLUMNS), filter=_filter(spec, uris), batch_size=chunk_rows, use_threads=False
    )
    for batch in scanner.to_batches():
        yield [
            SelectedRecord(**row)
            for row in batch.to_pylist()
            if spec.sample is None or in_sample(row["uri"], spec.sample)
        ]
