"""Dataset outputs that make each DID's rows visible exactly once (protocol in ``base``)."""

from collections.abc import Mapping
from typing import Final

from bsky_backfill.sinks.base import AsyncSink, LocalSink, Sink, SinkWriteFailed
from bsky_backfill.sinks.jsonl import JsonlSink
from bsky_backfill.sinks.manifest import Manifest
from bsky_backfill.sinks.parquet import ParquetSink
from bsky_backfill.sinks.sqlite import SqliteSink

__all__ = [
    "SINK_TYPES",
    "AsyncSink",
    "JsonlSink",
    "LocalSink",
    "Manifest",
    "ParquetSink",
    "Sink",
    "SinkWriteFailed",
    "SqliteSink",
]

SINK_TYPES: Final[Mapping[str, type[LocalSink]]] = {
    "parquet": ParquetSink,
    "jsonl": JsonlSink,
    "sqlite": SqliteSink,
}
"""The sink class for each ``storage.type`` this package writes locally."""
