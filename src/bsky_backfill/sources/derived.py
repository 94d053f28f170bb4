"""DIDs that an earlier job's records point at (the proposal's "determine which DIDs to
backfill"): the authors of liked, reposted, replied-to and quoted posts, and followed
accounts, read from that job's Parquet dataset.

Each DID is yielded once, in first-seen order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, Literal

import pyarrow.dataset as ds

from bsky_backfill.atproto.syntax import is_valid_at_uri
from bsky_backfill.errors import ConfigError

__all__ = ["RELATIONS", "Relation", "derive_dids"]

Relation = Literal["like", "repost", "reply", "quote", "follow"]
RELATIONS: Final[tuple[Relation, ...]] = ("like", "repost", "reply", "quote", "follow")
# relation -> (collection, column holding the pointer)
_SOURCES: Final[dict[Relation, tuple[str, str]]] = {
    "like": ("app.bsky.feed.like", "subject_uri"),
    "repost": ("app.bsky.feed.repost", "subject_uri"),
    "reply": ("app.bsky.feed.post", "reply_parent_uri"),
    "quote": ("app.bsky.feed.post", "record"),
    "follow": ("app.bsky.graph.follow", "subject_did"),
}


def _author(uri: str) -> str | None:
    """The DID in an ``at://did/...`` URI, if it is one."""
    if not uri.startswith("at://did:") or not is_valid_at_uri(uri):
        return None
    return uri[5:].split("/", 1)[0]


def _quoted(record_json: str) -> str | None:
    try:
        embed = json.loads(record_json).get("embed") or {}
    except (ValueError, AttributeError):
        return None
    record = embed.get("record") if isinstance(embed, dict) else None
    if isinstance(record, dict) and isinstance(record.get("record"), dict):
        record = record["record"]  # app.bsky.embed.recordWithMedia nests one level deeper
    uri = record.get("uri") if isinstance(record, dict) else None
    return uri if isinstance(uri, str) else None


def _pointers(dataset: ds.Dataset, relation: Relation) -> Iterator[str]:
    collection, column = _SOURCES[relation]
    scanner = dataset.scanner(columns=[column], filter=ds.field("collection") == collection)
    for batch in scanner.to_batches():
        for value in batch.column(0).to_pylist():
            if not isinstance(value, str):
                continue
            if relation == "follow":
                yield value
                continue
            uri = _quoted(value) if relation == "quote" else value
            author = _author(uri) if uri is not None else None
            if author is not None:
                yield author


def derive_dids(dataset_path: Path, relations: Iterable[Relation]) -> Iterator[str]:
    """The DIDs the records of the dataset at ``dataset_path`` point at, by ``relations``.

    Raises ``ConfigError`` when there is no Parquet dataset there or a relation is unknown.
    """
    wanted = list(dict.fromkeys(relations))
    unknown = [r for r in wanted if r not in _SOURCES]
    if unknown or not wanted:
        raise ConfigError(
            f"derived source relations must be some of {', '.join(RELATIONS)}"
            f" (got {unknown or 'none'})",
            key="backfill.source.relations",
        )
    records = dataset_path / "records"
    if not records.is_dir():
        raise ConfigError(
            f"no dataset at {dataset_path} (expected {records}/collection=<nsid>/*.parquet)",
            key="backfill.source.dataset",
        )
    dataset = ds.dataset(records, format="parquet", partitioning="hive")
    return _unique(d for relation in wanted for d in _pointers(dataset, relation))


def _unique(dids: Iterator[str]) -> Iterator[str]:
    seen: set[str] = set()
    for did in dids:
        if did not in seen:
            seen.add(did)
            yield did
