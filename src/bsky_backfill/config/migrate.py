"""Convert a config of the original code (the pre-consolidation format) to the current one.

The legacy format (``services/backfill`` of the research monorepo) looked like::

    backfill:
      name: "backfill_study_users"
      version: "1.0"
      source: {type: "sqlite", path: "scripts/backfill/study_users.sqlite", metadata: str}
      plc_storage: {type: "sqlite", path: "scripts/backfill/plc.sqlite", metadata: str}
      record_types: ["app.bsky.feed.post", "app.bsky.feed.like"]
      time_range: {start_date: "2024-09-28-00:00:00", end_date: "2024-12-01-00:00:00"}
      filters:                            # optional
        record_type: "app.bsky.feed.post"
        subject: [uri]
        source: {type: "parquet", path: "post_uris.parquet", metadata: ""}
      sync_storage: {type: "parquet", path: "", metadata: "", min_timestamp: "2025-05-04-05:01:50"}

Fields the current format has no place for are dropped with a note saying why; the
result is validated before it is returned, so a migration either yields a config that
loads or fails with located errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bsky_backfill.config.fields import TABLE_SUFFIXES
from bsky_backfill.config.loader import load_config, read_config_text
from bsky_backfill.config.schema import BackfillConfig
from bsky_backfill.config.yamldoc import Key, YamlDocument, format_key, read_yaml
from bsky_backfill.errors import ConfigError, ConfigProblems

__all__ = ["LEGACY_QUEUE_QUERY", "Migration", "migrate_config"]

LEGACY_QUEUE_QUERY = """\
WITH RECURSIVE
  batch(payload, i) AS (
    SELECT payload, 0 FROM queue WHERE json_array_length(payload) > 0
    UNION ALL SELECT payload, i + 1 FROM batch WHERE i + 1 < json_array_length(payload)),
  dids(list, j) AS (
    SELECT json_extract(payload, '$[' || i || '].dids'), 0 FROM batch
    UNION ALL SELECT list, j + 1 FROM dids WHERE j + 1 < json_array_length(list))
SELECT DISTINCT json_extract(list, '$[' || j || ']') AS did FROM dids
WHERE j < json_array_length(list)
"""
"""The DIDs in a legacy queue database: table ``queue``, each ``payload`` a JSON list of
``{"dids": [...]}`` batches (``lib/db/queue.py`` of the original code). Array indexes are
walked with a recursive CTE rather than ``json_each``: the SQLite source's authorizer
refuses virtual tables."""


class _Dumper(yaml.SafeDumper):
    """Writes text with line breaks as a ``|`` block, so a query reads as written."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)

_LEGACY_INSTANT = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})-([0-9]{2}:[0-9]{2}:[0-9]{2})")
_FILE_TYPES = {"file", "local", "txt", "csv", "parquet", "jsonl"}
_KEPT = ("version", "record_types", "processing", "identity", "verify", "network")
_KEPT_LATE = ("monitoring",)
_ORDER = (
    "name",
    "version",
    "source",
    "record_types",
    "time_range",
    "filters",
    "processing",
    "identity",
    "verify",
    "network",
    "storage",
    "monitoring",
)


@dataclass(frozen=True)
class Migration:
    """A converted config: ``text`` is the new YAML (notes as comments at the top)."""

    config: BackfillConfig
    text: str
    notes: tuple[str, ...]


def migrate_config(
    source: str | os.PathLike[str],
    *,
    project_home: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Migration:
    """Convert the legacy config in ``source`` (a file or YAML text, as ``load_config``).

    Legacy paths were relative to the project's home folder; with ``project_home`` they
    become absolute paths under it, otherwise they are kept as written (and a note says to
    check them, since relative paths now resolve against the config file's folder).
    Raises ``ConfigError``/``ConfigProblems`` located in the legacy file, both for what
    cannot be converted and for what the converted config fails to validate.
    """
    text, name, folder = read_config_text(source)
    try:
        document = read_yaml(text, environ=None)  # references stay ${NAME}, as written
        converter = _Converter(document, Path(project_home) if project_home else None)
        new = converter.convert()
    except ConfigError as exc:
        exc.source = name
        raise
    header = [f"# Migrated from {name or 'a legacy config'} by bsky-backfill migrate-config."]
    header += [f"# - {note}" for note in converter.notes]
    # No wrapping: a long value folded over two lines is valid YAML but hard to read.
    body = yaml.dump(
        {"backfill": new}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000
    )
    new_text = "\n".join(header) + "\n" + body
    try:
        config = load_config(new_text, base_dir=folder, environ=environ)
    except ConfigError as exc:
        problems = tuple(converter.relocate(problem, name) for problem in exc.problems)
        raise (
            problems[0] if len(problems) == 1 else ConfigProblems(problems, source=name)
        ) from None
    return Migration(config, new_text, tuple(converter.notes))


class _Converter:
    """Legacy data -> current data; remembers which legacy key each new key came from."""

    def __init__(self, document: YamlDocument, project_home: Path | None) -> None:
        self.document = document
        self.project_home = project_home
        self.notes: list[str] = []
        self.origin: dict[tuple[Key, ...], tuple[Key, ...]] = {}
        data = document.data
        wrapped = isinstance(data, dict) and "backfill" in data
        self.root: tuple[Key, ...] = ("backfill",) if wrapped else ()
        self.old = data["backfill"] if wrapped else data
        if not isinstance(self.old, dict):
            raise self._error((), "is not a legacy config: expected a backfill: mapping")

    def convert(self) -> dict[str, Any]:
        old, new = dict(self.old), {}
        new["name"] = self._name(old.pop("name", None))
        for key in _KEPT:
            if key in old:
                new[key] = self._keep(old.pop(key), key)
        if "source" in old:
            new["source"] = self._source(old.pop("source"))
        if old.pop("plc_storage", None) is not None:
            self.notes.append(
                "dropped plc_storage: DID -> PDS lookups are now cached in the job's state "
                "store (identity.cache_ttl_seconds)"
            )
        if "time_range" in old:
            new["time_range"] = self._time_range(old.pop("time_range"))
        if "filters" in old:
            new["filters"] = self._filters(old.pop("filters"), new.get("record_types"))
        if "sync_storage" in old:
            new["storage"] = self._storage(old.pop("sync_storage"))
        elif "storage" in old:
            new["storage"] = self._keep(old.pop("storage"), "storage")
        for key in _KEPT_LATE:
            if key in old:
                new[key] = self._keep(old.pop(key), key)
        for key in old:
            raise self._error((key,), "is not a key of the legacy format: remove it")
        return {key: new[key] for key in _ORDER if key in new}

    def relocate(self, problem: ConfigError, name: str | None) -> ConfigError:
        """``problem`` of the converted config, moved to the legacy key it came from."""
        new_path = _parse_key(problem.key or "")
        for end in range(len(new_path), 0, -1):
            if (old := self.origin.get(new_path[:end])) is not None:
                full = (*self.root, *old, *new_path[end:])
                line = self.document.line_of(full)
                return ConfigError(problem.message, key=format_key(full), line=line, source=name)
        return ConfigError(problem.message, key=problem.key, source=name)

    # --- fields ----------------------------------------------------------------------------

    def _keep(self, value: Any, *old: Key) -> Any:
        self.origin[("backfill", *old)] = old
        return value

    def _name(self, name: Any) -> Any:
        self.origin[("backfill", "name")] = ("name",)
        if not isinstance(name, str):
            return name
        fixed = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_")[:64]
        if fixed != name:
            self.notes.append(f"renamed {name!r} to {fixed!r}: names are now [a-z0-9_-]")
        return fixed

    def _source(self, source: Any) -> Any:
        self.origin[("backfill", "source")] = ("source",)
        if not isinstance(source, dict):
            return source
        kind, path = source.get("type"), source.get("path")
        self._drop_metadata(source, "source")
        if kind in ("inline", "pds", "derived"):  # already the current form
            return source
        if kind == "sqlite":
            query = source.get("query")
            if query is None:
                query = LEGACY_QUEUE_QUERY
                self.notes.append(
                    "source: reads the DIDs of the legacy queue database (table queue); "
                    "change source.query for another table"
                )
            return {"type": "sqlite", "path": self._path(path), "query": query}
        if kind == "s3":
            extra = {k: source[k] for k in ("endpoint_url",) if k in source}
            return {"type": "s3", "uri": source.get("uri", path), **extra}
        if kind in _FILE_TYPES:
            column = source.get("column", "did")
            return {"type": "file", "path": self._path(path), "column": column}
        raise self._error(("source", "type"), "must be sqlite, s3 or a file type to migrate")

    def _time_range(self, window: Any) -> Any:
        self.origin[("backfill", "time_range")] = ("time_range",)
        if not isinstance(window, dict):
            return window
        converted, legacy = {}, False
        for key in ("start_date", "end_date"):
            value = window.get(key)
            if isinstance(value, str) and (match := _LEGACY_INSTANT.fullmatch(value.strip())):
                value, legacy = f"{match[1]}T{match[2]}Z", True
            if value not in (None, ""):
                converted[key] = self._keep(value, "time_range", key)
        if legacy:
            self.notes.append(
                "time_range: legacy times are read as UTC; the window is [start_date, "
                "end_date), end excluded"
            )
        return converted

    def _filters(self, filters: Any, record_types: Any) -> Any:
        if not isinstance(filters, dict) or "subject_uris" in filters:
            return self._keep(filters, "filters")
        table = filters.get("source")
        if not isinstance(table, dict) or not isinstance(table.get("path"), str):
            raise self._error(("filters", "source"), "needs type: and path: of the URI list")
        path, kind = table["path"], table.get("type")
        if kind not in _FILE_TYPES or not path.lower().endswith(TABLE_SUFFIXES):
            raise self._error(
                ("filters", "source"), "must be a .txt/.csv/.parquet/.jsonl file to migrate"
            )
        subject = filters.get("subject", ["uri"])
        columns = [subject] if isinstance(subject, str) else list(subject or ["uri"])
        if len(columns) != 1:
            raise self._error(("filters", "subject"), "must name one column to migrate")
        record_type = filters.get("record_type")
        if record_type is not None and record_types not in (None, [record_type]):
            self.notes.append(
                f"filters: the legacy filter applied to {record_type} only; "
                "filters.subject_uris applies to every record type (split the job if needed)"
            )
        self.origin[("backfill", "filters", "subject_uris")] = ("filters", "source")
        return {"subject_uris": {"path": self._path(path), "column": columns[0]}}

    def _storage(self, storage: Any) -> Any:
        self.origin[("backfill", "storage")] = ("sync_storage",)
        if not isinstance(storage, dict):
            return storage
        kind, path = storage.get("type", "parquet"), storage.get("path")
        self._drop_metadata(storage, "sync_storage")
        if storage.get("min_timestamp") not in (None, ""):
            self.notes.append(
                "dropped sync_storage.min_timestamp: a re-run now resumes by itself and "
                "re-fetches only repos that changed"
            )
        if kind in ("parquet", "sqlite", "jsonl"):
            if not path:
                self.notes.append(f"storage: output goes to ./data/<name> ({kind})")
                return {"type": kind}
            return {"type": kind, "path": self._path(path)}
        if kind == "s3":
            return {"type": "s3", "path": path}
        if kind == "dynamodb":
            keys = ("table_name", "region", "endpoint_url")
            return {"type": "dynamodb", **{k: storage[k] for k in keys if k in storage}}
        raise self._error(
            ("sync_storage", "type"), "must be parquet, sqlite, jsonl, s3 or dynamodb"
        )

    # --- helpers ---------------------------------------------------------------------------

    def _path(self, path: Any) -> Any:
        if not isinstance(path, str) or not path or Path(path).is_absolute():
            return path
        if self.project_home is not None:
            return str(self.project_home.absolute() / path)
        note = (
            "relative paths are now read from the config file's folder (they were read from "
            "the project's home): check them, or migrate again with --project-home"
        )
        if note not in self.notes:
            self.notes.append(note)
        return path

    def _drop_metadata(self, mapping: dict[str, Any], where: str) -> None:
        if mapping.get("metadata") not in (None, "", "str"):
            self.notes.append(f"dropped {where}.metadata: the current format has no use for it")

    def _error(self, path: tuple[Key, ...], message: str) -> ConfigError:
        full = (*self.root, *path)
        return ConfigError(message, key=format_key(full) or None, line=self.document.line_of(full))


def _parse_key(text: str) -> tuple[Key, ...]:
    """``backfill.record_types[2]`` -> ``('backfill', 'record_types', 2)``."""
    return tuple(
        int(index) if index else name for index, name in re.findall(r"\[(\d+)\]|([^.\[]+)", text)
    )
