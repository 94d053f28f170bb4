"""The dispatch config: frozen pydantic models for everything under ``dispatch:``.

Built like the backfill config (:mod:`bsky_backfill.config.schema`): unknown keys are
errors at every depth, numbers and booleans are strict, paths resolve against the
config file's folder, and the field types (names, NSIDs, URLs, paths, time windows) are
the backfill config's own. Loading (YAML, ``${NAME}``, located errors) is
:mod:`bsky_backfill.dispatch.loader`.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from bsky_backfill.config.fields import (
    ConfigPath,
    Name,
    Nsid,
    TableFileOrFolder,
    Text,
    WebhookUrl,
    is_private_host,
    sorted_unique,
)
from bsky_backfill.config.schema import Monitoring, TimeRange, fail_at
from bsky_backfill.config.sections import FrozenModel

__all__ = [
    "INTEGRATION_TYPES",
    "DispatchConfig",
    "DispatchDocument",
    "DispatchMonitoring",
    "DispatchNetwork",
    "Integration",
    "RecordSelection",
    "RedisIntegration",
    "Sample",
    "UriList",
    "WebhookIntegration",
]

INTEGRATION_TYPES: Final = ("webhook", "redis")
"""The ``type`` of each integration kind (the tags of :data:`Integration`)."""

_Seconds = Annotated[float, Strict(), Field(gt=0, le=3600)]


class UriList(FrozenModel):
    """Only records whose AT-URI is listed in ``column`` of ``path`` (a ``.txt``,
    ``.csv``, ``.parquet`` or ``.jsonl`` file, or a folder of Parquet files), e.g. the
    posts used in feeds."""

    path: TableFileOrFolder
    column: Text = "uri"


class Sample(FrozenModel):
    """A deterministic sample: a record is in iff ``hash(seed, uri) < proportion``, so
    every run (and every machine) picks the same records for the same seed."""

    proportion: Annotated[float, Strict(), Field(gt=0, le=1)]
    seed: StrictInt = 0


class RecordSelection(FrozenModel):
    """Which records of the dataset are sent: collections, the window
    ``start_date <= created_at < end_date`` (records without ``created_at`` are outside
    any window), a URI list, a sample, and at most ``max_records`` new ones per run."""

    collections: Annotated[tuple[Nsid, ...], AfterValidator(sorted_unique)] = (
        "app.bsky.feed.post",
    )
    time_range: TimeRange | None = None
    uris: UriList | None = None
    sample: Sample | None = None
    max_records: Annotated[StrictInt, Field(ge=1)] | None = None


class _Delivery(FrozenModel):
    """What every integration has: its name (the key of its bookkeeping: renaming it
    sends everything again), the time one send may take, and the retry schedule for
    failures worth retrying (``backoff_seconds``, doubled per attempt up to
    ``max_backoff_seconds``; a 429's ``Retry-After`` is honoured up to that cap)."""

    name: Name
    timeout_seconds: _Seconds = 10.0
    max_retries: Annotated[StrictInt, Field(ge=0, le=50)] = 5
    backoff_seconds: _Seconds = 0.5
    max_backoff_seconds: _Seconds = 30.0


class WebhookIntegration(_Delivery):
    """POST each batch as JSON to ``url`` (``headers`` added, e.g. an Authorization
    header from ``${ENV}``); any 2xx acknowledges the batch."""

    type: Literal["webhook"]
    url: WebhookUrl
    headers: dict[Text, StrictStr] = Field(default_factory=dict)


class RedisIntegration(_Delivery):
    """XADD each record to ``stream`` (trimmed to about ``maxlen`` entries if set); the
    batch is one MULTI/EXEC, acknowledged when it returns."""

    type: Literal["redis"]
    url: Annotated[str, Field(pattern=r"^rediss?://")]
    stream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:{}-]{1,200}$")]
    maxlen: Annotated[StrictInt, Field(ge=1)] | None = None


Integration = Annotated[WebhookIntegration | RedisIntegration, Field(discriminator="type")]
"""One downstream integration, told apart by ``type``."""


class DispatchNetwork(FrozenModel):
    """Guards on outbound connections: no loopback, private or link-local receivers
    unless allowed (test networks only), as for the backfill's hosts."""

    allow_private_addresses: StrictBool = False


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class DispatchMonitoring(FrozenModel):
    """Metrics port (0 = off) and address, and the log level."""

    prometheus_port: Annotated[StrictInt, Field(ge=0, le=65535)] = 8000
    prometheus_address: Annotated[str, Field(min_length=1, max_length=255)] = "127.0.0.1"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"

    def exporter(self) -> Monitoring:
        """The settings :func:`~bsky_backfill.observability.exporter.metrics_server` reads."""
        return Monitoring(
            prometheus_port=self.prometheus_port, prometheus_address=self.prometheus_address
        )


class DispatchConfig(FrozenModel):
    """Everything under ``dispatch:``: what to send from which dataset, where, and where
    the bookkeeping lives (``state_url``: PostgreSQL; default a SQLite file in
    ``<dataset>/_state/``)."""

    name: Name
    dataset: ConfigPath
    select: RecordSelection = RecordSelection()
    integrations: Annotated[tuple[Integration, ...], Field(min_length=1)]
    batch_size: Annotated[StrictInt, Field(ge=1, le=10_000)] = 100
    network: DispatchNetwork = DispatchNetwork()
    state_url: Annotated[str, Field(pattern=r"^postgresql(\+asyncpg)?://")] | None = None
    state_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = None
    monitoring: DispatchMonitoring = DispatchMonitoring()

    @model_validator(mode="after")
    def _integrations(self) -> DispatchConfig:
        seen: set[str] = set()
        for index, integration in enumerate(self.integrations):
            if integration.name in seen:
                raise fail_at(
                    ("integrations", index, "name"),
                    "is used twice: each integration needs a name of its own",
                    integration.name,
                )
            seen.add(integration.name)
            if not self.network.allow_private_addresses and is_private_host(integration.url):
                raise fail_at(
                    ("integrations", index, "url"),
                    "points at a loopback or private address, which is refused by default; "
                    "set network.allow_private_addresses: true (test networks only)",
                    integration.url,
                )
        return self


class DispatchDocument(FrozenModel):
    """A dispatch config file: one top-level key, ``dispatch``."""

    dispatch: DispatchConfig
