"""The two sections that come in several kinds: ``source`` and ``storage``.

Each is a union told apart by ``type``, one frozen model per kind, with the kind's own
required fields; :mod:`bsky_backfill.config.schema` assembles them into the whole config.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from bsky_backfill.config.fields import (
    BaseUrl,
    ConfigPath,
    Did,
    S3Uri,
    TableFile,
    Text,
    sorted_unique,
)

__all__ = [
    "CLOUD_SINKS",
    "FOLDER_SINKS",
    "RELATIONS",
    "DerivedSource",
    "DynamoDbStorage",
    "FileSource",
    "FrozenModel",
    "InlineSource",
    "JsonlStorage",
    "ParquetStorage",
    "PdsSource",
    "Relation",
    "S3Source",
    "S3Storage",
    "Source",
    "SqliteSource",
    "SqliteStorage",
    "Storage",
]

Relation = Literal["like", "repost", "reply", "quote", "follow"]
RELATIONS: tuple[Relation, ...] = ("like", "repost", "reply", "quote", "follow")
FOLDER_SINKS = ("parquet", "sqlite", "jsonl")
"""Storage kinds writing into a local folder, ``./data/<name>`` unless ``path`` says."""
CLOUD_SINKS = ("s3", "dynamodb")
"""Storage kinds writing to the cloud; their job state is in ``work_dir`` (``./data/<name>``)."""


class FrozenModel(BaseModel):
    """Base of every config model: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _canonical_relations(values: tuple[Relation, ...]) -> tuple[Relation, ...]:
    if not values:
        raise ValueError(f"must not be empty: list some of {', '.join(RELATIONS)}")
    return tuple(r for r in RELATIONS if r in values)


def _named(pattern: str, what: str, example: str) -> AfterValidator:
    """A check that a name matches ``pattern``, with a message showing ``example``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {what}, e.g. {example}")
        return value

    return AfterValidator(check)


Region = Annotated[StrictStr, _named(r"[a-z0-9-]{1,64}", "an AWS region name", "us-west-2")]


# --- sources -----------------------------------------------------------------------------


class FileSource(FrozenModel):
    """DIDs from a local file: ``.txt`` one per line; ``.csv``/``.parquet``/``.jsonl`` column."""

    type: Literal["file"]
    path: TableFile
    column: Text = "did"


class InlineSource(FrozenModel):
    """DIDs written in the config (sorted, duplicates dropped)."""

    type: Literal["inline"]
    dids: Annotated[tuple[Did, ...], AfterValidator(sorted_unique)]


class SqliteSource(FrozenModel):
    """DIDs from one SELECT on a SQLite database, opened read-only.

    Only the query's shape is checked here; the source enforces "one SELECT, no ATTACH,
    PRAGMA or writes" with SQLite's authorizer, since string checks alone can be fooled.
    """

    type: Literal["sqlite"]
    path: ConfigPath
    query: Text = "SELECT did FROM dids"

    @field_validator("query")
    @classmethod
    def _looks_like_select(cls, query: str) -> str:
        words = query.split(None, 1)
        if not words or words[0].upper() not in ("SELECT", "WITH"):
            raise ValueError("must be one SELECT statement, e.g. SELECT did FROM dids")
        return query.strip()


class S3Source(FrozenModel):
    """DIDs from S3 (or an S3-compatible server at ``endpoint_url``): one object named by
    its table suffix, or every table object under a prefix (any other ``uri``)."""

    type: Literal["s3"]
    # ``path`` is the proposal's spelling (``source: {type: s3, path: s3://...}``).
    uri: S3Uri = Field(validation_alias=AliasChoices("uri", "path"))
    column: Text = "did"
    region: Region | None = None
    endpoint_url: BaseUrl | None = None


class PdsSource(FrozenModel):
    """Every active repo on the given PDS hosts (``com.atproto.sync.listRepos``)."""

    type: Literal["pds"]
    hosts: Annotated[tuple[BaseUrl, ...], AfterValidator(sorted_unique)]


class DerivedSource(FrozenModel):
    """The DIDs that an earlier job's records point at, through the given relations."""

    type: Literal["derived"]
    dataset: ConfigPath
    relations: Annotated[tuple[Relation, ...], AfterValidator(_canonical_relations)] = RELATIONS


Source = Annotated[
    FileSource | InlineSource | SqliteSource | S3Source | PdsSource | DerivedSource,
    Field(discriminator="type"),
]


# --- storage -----------------------------------------------------------------------------


class ParquetStorage(FrozenModel):
    """The default sink: a Parquet dataset in folder ``path`` (``./data/<name>``)."""

    type: Literal["parquet"]
    path: ConfigPath


class SqliteStorage(FrozenModel):
    """A SQLite sink in folder ``path`` (``./data/<name>``)."""

    type: Literal["sqlite"]
    path: ConfigPath


class JsonlStorage(FrozenModel):
    """A JSON-lines sink in folder ``path`` (``./data/<name>``)."""

    type: Literal["jsonl"]
    path: ConfigPath


class S3Storage(FrozenModel):
    """Parquet under ``s3://bucket/prefix`` (or an S3-compatible server at ``endpoint_url``),
    in the local Parquet layout. ``work_dir`` (``./data/<name>``) holds the job's state."""

    type: Literal["s3"]
    path: S3Uri
    region: Region | None = None
    endpoint_url: BaseUrl | None = None
    work_dir: ConfigPath


TableName = Annotated[
    StrictStr,
    _named(r"[A-Za-z0-9_.-]{3,255}", "3-255 of A-Z, a-z, 0-9, '_', '.', '-'", "backfill_results"),
]


class DynamoDbStorage(FrozenModel):
    """DynamoDB tables (or a DynamoDB-compatible server at ``endpoint_url``): records in
    ``table_name``, one item per DID and job in ``user_metadata_table``, one per run in
    ``run_metadata_table``. Records over DynamoDB's 400 KB item limit go to
    ``overflow_path`` in S3 (same region and endpoint) when set, else are reported as
    omitted. ``work_dir`` (``./data/<name>``) holds the job's state and staged batches."""

    type: Literal["dynamodb"]
    table_name: TableName = "backfill_results"
    user_metadata_table: TableName = "backfill_user_metadata"
    run_metadata_table: TableName = "backfill_metadata"
    region: Region = "us-west-2"
    endpoint_url: BaseUrl | None = None
    create_tables: StrictBool = False
    overflow_path: S3Uri | None = None
    work_dir: ConfigPath

    @model_validator(mode="after")
    def _distinct_tables(self) -> DynamoDbStorage:
        names = (self.table_name, self.user_metadata_table, self.run_metadata_table)
        if len(set(names)) < len(names):
            raise ValueError(
                "table_name, user_metadata_table and run_metadata_table must be three"
                " different tables"
            )
        return self


Storage = Annotated[
    ParquetStorage | SqliteStorage | JsonlStorage | S3Storage | DynamoDbStorage,
    Field(discriminator="type"),
]
