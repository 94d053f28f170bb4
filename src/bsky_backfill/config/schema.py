"""The backfill config: frozen pydantic models for every field of DESIGN.md's ``backfill:``.

Unknown keys are rejected at every depth (``extra="forbid"``); numbers, booleans and text
are strict (``"10"`` is not a number, ``yes`` in quotes is not a boolean). Values are
normalised on the way in: paths are absolute (relative ones against the config file's
folder, passed as ``base_dir`` in the validation context), the time window is a half-open
``[start_date, end_date)`` pair of UTC datetimes, and lists that are really sets
(record types, DIDs, hosts, relations) are sorted and de-duplicated, so that two configs
meaning the same thing have the same :meth:`BackfillConfig.config_hash`.

The ``source`` and ``storage`` kinds live in :mod:`~bsky_backfill.config.sections` and are
re-exported here, so this module is the one place to import config models from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bsky_backfill.config.fields import (
    BaseUrl,
    Name,
    Nsid,
    TableFileOrFolder,
    Text,
    WebhookUrl,
    WindowEnd,
    WindowStart,
    is_private_host,
    sorted_unique,
)
from bsky_backfill.config.sections import (
    CLOUD_SINKS,
    FOLDER_SINKS,
    DerivedSource,
    DynamoDbStorage,
    FileSource,
    FrozenModel,
    InlineSource,
    JsonlStorage,
    ParquetStorage,
    PdsSource,
    S3Source,
    S3Storage,
    Source,
    SqliteSource,
    SqliteStorage,
    Storage,
)

__all__ = [
    "DEFAULT_RECORD_TYPES",
    "BackfillConfig",
    "ConfigDocument",
    "DerivedSource",
    "Distributed",
    "DynamoDbStorage",
    "FileSource",
    "Filters",
    "Identity",
    "InlineSource",
    "JsonlStorage",
    "Monitoring",
    "Network",
    "ParquetStorage",
    "PdsSource",
    "Processing",
    "S3Source",
    "S3Storage",
    "SqliteSource",
    "SqliteStorage",
    "SubjectUriFilter",
    "TimeRange",
    "fail_at",
]

DEFAULT_RECORD_TYPES = ("app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.feed.repost")

_REDACTED = "<redacted>"

PositiveFloat = Annotated[float, Strict(), Field(gt=0)]


def fail_at(loc: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    """A validation error located at ``loc`` below the model being validated.

    For model validators, which cannot name a field otherwise: the loader needs the field's
    key to find its line.
    """
    error = PydanticCustomError("config", "{message}", {"message": message})
    return ValidationError.from_exception_data(
        "BackfillConfig", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


# --- selection ---------------------------------------------------------------------------


class TimeRange(FrozenModel):
    """The window ``start_date <= t < end_date`` in UTC; ``end_date`` None means no end.

    A bare end date is normalised to the start of the next day, so it is included whole.
    """

    start_date: WindowStart
    end_date: WindowEnd = None

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise fail_at(
                ("end_date",),
                "must be after start_date (a bare end date is included whole, so the same "
                "date as start_date gives one day)",
                self.end_date,
            )
        return self

    def contains(self, instant: datetime) -> bool:
        """True if the aware datetime ``instant`` is inside the window."""
        return self.start_date <= instant and (self.end_date is None or instant < self.end_date)


class SubjectUriFilter(FrozenModel):
    """Keep records whose own or subject AT-URI is listed in ``column`` of ``path``.

    ``path`` is a ``.txt``/``.csv``/``.parquet``/``.jsonl`` file, or a folder of Parquet
    files (such as an earlier job's ``records/``).
    """

    path: TableFileOrFolder
    column: Text = "uri"


class Filters(FrozenModel):
    """Optional record filters beyond collection and time window."""

    subject_uris: SubjectUriFilter | None = None


# --- how to run --------------------------------------------------------------------------


class Processing(FrozenModel):
    """Scheduling: how many DIDs per step, hosts at once, and the per-host request rate."""

    batch_size: Annotated[StrictInt, Field(ge=1, le=100_000)] = 100
    max_concurrent_pds: Annotated[StrictInt, Field(ge=1, le=4096)] = 32
    requests_per_second: Annotated[PositiveFloat, Field(le=10_000)] = 10.0
    max_retries: Annotated[StrictInt, Field(ge=0, le=20)] = 3


class Identity(FrozenModel):
    """Where DIDs are resolved, and how long a resolution is trusted."""

    plc_url: BaseUrl = "https://plc.directory"
    cache_ttl_seconds: Annotated[StrictInt, Field(ge=0, le=365 * 86400)] = 86400


class Network(FrozenModel):
    """Guards on outbound requests."""

    allow_private_addresses: StrictBool = False
    max_repo_bytes: Annotated[StrictInt, Field(ge=1, le=2**40)] = 2 * 1024**3


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class Monitoring(FrozenModel):
    """Metrics port (0 = off) and address, how many hosts get a metric label of their own
    (the rest are ``other``), log level, and where failures are announced."""

    prometheus_port: Annotated[StrictInt, Field(ge=0, le=65535)] = 8000
    prometheus_address: Annotated[str, Field(min_length=1, max_length=255)] = "127.0.0.1"
    host_label_limit: Annotated[StrictInt, Field(ge=0, le=10_000)] = 50
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    alert_on_failure: StrictBool = True
    alert_webhook_url: WebhookUrl | None = None


class Distributed(FrozenModel):
    """Where a ``run --distributed`` job keeps its shared state (see ``distributed/``).

    ``state_url``: the PostgreSQL job store every worker shares (``postgresql://...``; put
    credentials in ``${ENV}``); ``state_schema``: a schema of its own in that database.
    ``redis_url``: the Redis holding the cluster-wide per-host rate limits and cancel
    flags, under ``key_prefix``. ``rate_limit_scope``: ``cluster`` = one budget per host
    for the whole cluster; ``egress_ip`` = one per host per egress address (each worker
    says its own with ``--egress-id``). ``shard_size``: DIDs per task; a task should end
    well within the broker's visibility timeout.
    """

    state_url: Annotated[str, Field(pattern=r"^postgresql(\+asyncpg)?://")] | None = None
    state_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = None
    redis_url: Annotated[str, Field(pattern=r"^rediss?://")] = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "bsky-backfill"
    rate_limit_scope: Literal["cluster", "egress_ip"] = "cluster"
    shard_size: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 500


# --- the whole config --------------------------------------------------------------------


class BackfillConfig(FrozenModel):
    """Everything under ``backfill:``: what to fetch, how, and where to write it.

    Required: ``name``, ``source``, ``time_range.start_date``. Every other field has the
    default DESIGN.md shows; ``storage`` defaults to Parquet in ``./data/<name>``.
    Build it with :func:`bsky_backfill.config.load_config`, which also records which values
    came from environment variables so that :meth:`redacted` can leave them out.
    """

    name: Name
    version: StrictStr = "1.0"
    source: Source
    record_types: Annotated[tuple[Nsid, ...], AfterValidator(sorted_unique)] = DEFAULT_RECORD_TYPES
    time_range: TimeRange
    filters: Filters = Filters()
    processing: Processing = Processing()
    identity: Identity = Identity()
    verify: Literal["full", "hashes", "none"] = "full"
    network: Network = Network()
    storage: Storage
    monitoring: Monitoring = Monitoring()
    distributed: Distributed = Distributed()

    # Field path (keys below ``backfill``) -> the value as written, ``${NAME}`` unexpanded.
    _from_env: Mapping[tuple[str | int, ...], Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_storage(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("name") if isinstance(data.get("name"), str) else "backfill"
        storage = data.get("storage", {})
        if isinstance(storage, dict):
            storage = {"type": "parquet", **storage}
            if storage["type"] in FOLDER_SINKS and "path" not in storage:
                storage["path"] = f"./data/{name}"
            if storage["type"] in CLOUD_SINKS and "work_dir" not in storage:
                storage["work_dir"] = f"./data/{name}"
            data = {**data, "storage": storage}
        return data

    @model_validator(mode="after")
    def _private_addresses_allowed(self) -> BackfillConfig:
        if self.network.allow_private_addresses:
            return self
        targets: list[tuple[tuple[str | int, ...], str]] = [
            (("identity", "plc_url"), self.identity.plc_url)
        ]
        if isinstance(self.source, PdsSource):
            targets += [(("source", "hosts", i), h) for i, h in enumerate(self.source.hosts)]
        for loc, url in targets:
            if is_private_host(url):
                raise fail_at(
                    loc,
                    "points at a loopback or private address, which is refused by default; "
                    "set network.allow_private_addresses: true (test networks only)",
                    url,
                )
        return self

    def with_env_fields(self, fields: Mapping[tuple[str | int, ...], Any]) -> BackfillConfig:
        """This config, noting the fields whose values came from ``${NAME}`` references.

        ``fields`` maps a key path below ``backfill`` to its value as written. Returns a
        copy; the loader calls this, other code has no need to.
        """
        copy = self.model_copy()
        copy._from_env = dict(fields)
        return copy

    def redacted(self) -> dict[str, Any]:
        """The normalised config as JSON-ready data under ``backfill:``, with no secrets.

        A field whose value came from an environment variable shows the text as written
        (``${NAME}``, never the value); ``monitoring.alert_webhook_url``, whose path usually
        holds a token, keeps only its scheme and host. Safe to log and to store in a
        manifest; it loads back as a config (with those variables set).
        """
        data = self.model_dump(mode="json")
        if (webhook := self.monitoring.alert_webhook_url) is not None:
            parts = urlsplit(webhook)  # credentials are refused, so netloc is host[:port]
            data["monitoring"]["alert_webhook_url"] = f"{parts.scheme}://{parts.netloc}/{_REDACTED}"
        for path, written in self._from_env.items():
            node: Any = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = written
        return {"backfill": data}

    def config_hash(self) -> str:
        """``sha256:<hex>`` of :meth:`redacted` as canonical JSON (sorted keys, no spaces).

        Stable for equal normalised configs, and checkable from a manifest alone, since it
        covers exactly the redacted config the manifest stores (so rotating a secret held in
        an environment variable does not change it).
        """
        text = json.dumps(self.redacted(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class ConfigDocument(FrozenModel):
    """A config file: one top-level key, ``backfill``."""

    backfill: BackfillConfig
