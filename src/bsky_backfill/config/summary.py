"""A one-screen, secret-free summary of a config, for ``bsky-backfill validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bsky_backfill.config.schema import (
    BackfillConfig,
    DerivedSource,
    FileSource,
    SqliteSource,
)

__all__ = ["missing_inputs", "summarize"]


def summarize(config: BackfillConfig) -> list[str]:
    """Lines describing ``config``, built from :meth:`BackfillConfig.redacted` only."""
    data = config.redacted()["backfill"]
    window = data["time_range"]
    processing, monitoring = data["processing"], data["monitoring"]
    subject = data["filters"]["subject_uris"]
    private = "allowed" if data["network"]["allow_private_addresses"] else "refused"
    rows = [
        ("name", f"{data['name']} (version {data['version']})"),
        ("source", _source(data["source"])),
        ("records", ", ".join(map(str, data["record_types"]))),
        ("window", f"{window['start_date']} <= t < {window['end_date'] or 'no end'}"),
        ("filter", f"URIs in {subject['column']} of {subject['path']}" if subject else "none"),
        (
            "processing",
            f"up to {processing['batch_size']} DIDs per batch, {processing['max_concurrent_pds']} "
            f"hosts at once, {processing['requests_per_second']} requests/s per host, "
            f"{processing['max_retries']} retries",
        ),
        (
            "identity",
            f"{data['identity']['plc_url']}, cached {data['identity']['cache_ttl_seconds']} s",
        ),
        ("verify", data["verify"]),
        (
            "network",
            f"private addresses {private}, repos up to {_size(data['network']['max_repo_bytes'])}",
        ),
        ("storage", _storage(data["storage"])),
        ("monitoring", _monitoring(monitoring)),
        ("hash", config.config_hash()),
    ]
    return [f"{label:<11} {value}" for label, value in rows]


def missing_inputs(config: BackfillConfig) -> list[str]:
    """``key: path`` for each local input that does not exist (yet), as redacted text.

    Not an error: an input may be written later (stage 2 reads what stage 1 writes) or live
    on the machine that runs the job.
    """
    data = config.redacted()["backfill"]
    inputs: list[tuple[str, Path, Any]] = []
    if isinstance(config.source, FileSource | SqliteSource):
        inputs.append(("source.path", config.source.path, data["source"]["path"]))
    if isinstance(config.source, DerivedSource):
        inputs.append(("source.dataset", config.source.dataset, data["source"]["dataset"]))
    if (subject := config.filters.subject_uris) is not None:
        inputs.append(
            ("filters.subject_uris.path", subject.path, data["filters"]["subject_uris"]["path"])
        )
    return [f"backfill.{key}: {shown}" for key, path, shown in inputs if not path.exists()]


def _source(source: dict[str, Any]) -> str:
    kind = source["type"]
    if kind == "inline":
        count = len(source["dids"])
        return f"inline, {count} DID{'' if count == 1 else 's'}"
    if kind == "file":
        return f"file {source['path']} (column {source['column']})"
    if kind == "sqlite":
        return f"sqlite {source['path']}: {source['query']}"
    if kind == "s3":
        return f"s3 {source['uri']}" + _endpoint(source)
    if kind == "pds":
        return f"every active repo on {', '.join(map(str, source['hosts']))}"
    relations = "/".join(map(str, source["relations"]))
    return f"DIDs that the {relations} records in {source['dataset']} point at"


def _storage(storage: dict[str, Any]) -> str:
    if storage["type"] == "dynamodb":
        tables = "/".join(
            storage[k] for k in ("table_name", "user_metadata_table", "run_metadata_table")
        )
        where = f"tables {tables} in {storage['region']}{_endpoint(storage)}"
        if storage["create_tables"]:
            where += ", created if missing"
        oversized = storage["overflow_path"] or "omitted (no overflow_path)"
        return f"dynamodb {where}; records over 400 KB: {oversized}; {_state(storage)}"
    text = f"{storage['type']} {storage['path']}{_endpoint(storage)}"
    return f"{text}; {_state(storage)}" if "work_dir" in storage else text


def _state(storage: dict[str, Any]) -> str:
    return f"job state in {storage['work_dir']}"


def _endpoint(settings: dict[str, Any]) -> str:
    return f" via {settings['endpoint_url']}" if settings.get("endpoint_url") else ""


def _monitoring(monitoring: dict[str, Any]) -> str:
    port = monitoring["prometheus_port"]
    where = f"{monitoring['prometheus_address']}:{port}"
    metrics = "metrics off" if port == 0 else f"metrics on {where} (busiest "
    metrics += "" if port == 0 else f"{monitoring['host_label_limit']} hosts by name)"
    if not monitoring["alert_on_failure"]:
        alerts = "no alerts"
    elif monitoring["alert_webhook_url"]:
        alerts = f"alerts to {monitoring['alert_webhook_url']}"
    else:
        alerts = "failures logged, no webhook"
    return f"{metrics}, log {monitoring['log_level']}, {alerts}"


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return str(value)
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale and value % scale == 0:
            return f"{value // scale} {unit}"
    return f"{value} bytes"
