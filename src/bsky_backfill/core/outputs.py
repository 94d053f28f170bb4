"""From the config's ``storage`` section to a sink, its local work directory and its
preflight check.

Every job keeps its state on local disk: beside the dataset for the local sinks
(``<path>/_state``), in ``work_dir/_state`` for S3 and DynamoDB, whose datasets live in
the cloud. The preflight runs before any DID is fetched, so a missing bucket or table,
or credentials that may not write, stop a job at once with an error naming them.
"""

from __future__ import annotations

from pathlib import Path

from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.config.sections import DynamoDbStorage, S3Storage
from bsky_backfill.sinks import SINK_TYPES, Sink

# The cloud sinks are imported when a config asks for one: boto3 costs every other job
# ~30 MB of memory (BENCHMARKS.md, peak memory).

__all__ = ["open_sink", "preflight", "work_dir"]


def work_dir(config: BackfillConfig) -> Path:
    """The job's local directory: the dataset itself for local sinks, else ``work_dir``."""
    storage = config.storage
    if isinstance(storage, S3Storage | DynamoDbStorage):
        return Path(storage.work_dir)
    return Path(storage.path)


def open_sink(config: BackfillConfig) -> Sink:
    """The sink ``config.storage`` describes (no I/O yet)."""
    storage = config.storage
    if isinstance(storage, S3Storage):
        from bsky_backfill.cloud.aws import AwsTarget
        from bsky_backfill.cloud.s3 import Bucket
        from bsky_backfill.sinks.s3 import S3ParquetSink

        target = AwsTarget(storage.region, storage.endpoint_url)
        return S3ParquetSink(Bucket(storage.path, target))
    if isinstance(storage, DynamoDbStorage):
        from bsky_backfill.cloud.aws import AwsTarget
        from bsky_backfill.cloud.s3 import Bucket
        from bsky_backfill.sinks.dynamodb import DynamoDbSink, DynamoTables

        target = AwsTarget(storage.region, storage.endpoint_url)
        overflow = Bucket(storage.overflow_path, target) if storage.overflow_path else None
        tables = DynamoTables(
            storage.table_name, storage.user_metadata_table, storage.run_metadata_table
        )
        return DynamoDbSink(
            tables,
            target,
            job_id=config.name,
            staging_dir=work_dir(config) / "_state" / "dynamodb",
            overflow=overflow,
        )
    return SINK_TYPES[storage.type](Path(storage.path))


def preflight(config: BackfillConfig, sink: Sink) -> None:
    """Check that ``sink``'s cloud resources exist and take writes (blocking).

    Raises ``StorageMissing`` / ``StorageAccessDenied`` naming the bucket or table, or
    ``StoreUnavailable`` when the service cannot be reached. Local sinks need no check:
    their first write reports a problem with the path.
    """
    storage = config.storage
    if isinstance(storage, S3Storage):
        from bsky_backfill.sinks.s3 import S3ParquetSink

        if isinstance(sink, S3ParquetSink):
            sink.check()
    elif isinstance(storage, DynamoDbStorage):
        from bsky_backfill.sinks.dynamodb import DynamoDbSink

        if isinstance(sink, DynamoDbSink):
            sink.check(create_tables=storage.create_tables)
