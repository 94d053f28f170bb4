"""Turn pydantic's validation errors into located ``ConfigError``\\ s that say how to fix them.

Each error becomes: the key path as the user wrote it (pydantic's union tags such as
``file`` in ``source.file.path`` removed), the line of that key, and a message naming what
is wrong and the fix. The value given is shown when it helps, unless it came from an
environment variable; substituted values are also scrubbed from every message, as a last
guard.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bsky_backfill.config.schema import ConfigDocument
from bsky_backfill.config.yamldoc import Key, YamlDocument, format_key
from bsky_backfill.errors import ConfigError

__all__ = ["problems_from"]

_EXAMPLES = {
    "ConfigDocument.backfill": "a top-level backfill: mapping (see configs/default.yaml)",
    "BackfillConfig.name": "name: my_backfill",
    "BackfillConfig.source": "source: {type: file, path: dids.txt}",
    "BackfillConfig.time_range": 'time_range: {start_date: "2025-01-02"}',
    "TimeRange.start_date": 'start_date: "2025-01-02"',
    "FileSource.path": "path: dids.txt",
    "InlineSource.dids": "dids: [did:plc:z72i7hdynmk6r22z27h6tvur]",
    "SqliteSource.path": "path: dids.sqlite",
    "S3Source.uri": "uri: s3://bucket/dids.csv",
    "PdsSource.hosts": "hosts: [https://pds.example.com]",
    "DerivedSource.dataset": "dataset: ./data/earlier_job",
    "SubjectUriFilter.path": "path: uris.parquet",
    "S3Storage.path": "path: s3://bucket/prefix",
}
# Keys of the pre-consolidation format: point at the converter rather than only refusing.
_LEGACY_KEYS = {"plc_storage", "sync_storage", "metadata", "record_type", "subject"}
_TYPE_NAMES = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "text",
}
_SHOWN_CHARS = 60
_SCRUB_MIN_CHARS = 3


def problems_from(exc: ValidationError, document: YamlDocument) -> list[ConfigError]:
    """One ``ConfigError`` per error in ``exc``, located in ``document``, in line order.

    Errors at or below a path whose ``${NAME}`` could not be expanded are dropped: the
    missing variable is the problem already reported there.
    """
    problems: dict[tuple[str | None, str], ConfigError] = {}
    for error in exc.errors(include_url=False):
        path, parent, annotation = _walk(error["loc"])
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")  # point at the line of `type:`, not of the mapping
        if any(path[: len(b)] == b for b in document.broken):
            continue
        from_env = any(path[: len(e)] == e or e[: len(path)] == path for e in document.env_paths)
        tags = ", ".join(_members(_unwrap(annotation)))
        message = _describe(error, path, parent, tags=tags, show=not from_env)
        message = _scrub(message, document)
        key = format_key(path) or None
        problems.setdefault(
            (key, message), ConfigError(message, key=key, line=document.line_of(path))
        )
    return sorted(problems.values(), key=lambda p: p.line or 0)


def _describe(
    error: ErrorDetails,
    path: tuple[Key, ...],
    parent: type[BaseModel] | None,
    *,
    tags: str,
    show: bool,
) -> str:
    """What is wrong at ``path`` and how to fix it; ``tags`` are a union's types there."""
    kind, ctx = error["type"], error.get("ctx", {})
    leaf = str(path[-1]) if path else ""
    if not path and kind in ("model_type", "model_attributes_type", "dict_type"):
        return "the config must be a mapping with one top-level key, backfill:"
    if kind == "missing":
        example = _EXAMPLES.get(f"{parent.__name__}.{leaf}" if parent else leaf, f"{leaf}: ...")
        return f"is required: add {example}"
    if kind == "extra_forbidden":
        return _unknown_key(leaf, parent)
    if kind == "invalid_key":
        return "is not a known key: keys are text, such as name or source"
    if kind == "union_tag_invalid":
        return f"is not a known type: use one of {tags}"
    if kind == "union_tag_not_found":
        return f"needs a type: add type: with one of {tags}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys to values, indented below it"
    if kind in ("tuple_type", "list_type"):
        return "must be a list: [a, b], or one '- item' per line"
    if kind in _TYPE_NAMES:
        message = f"must be {_TYPE_NAMES[kind]}"
        if kind == "string_type":
            message += ": put the value in quotes"
        elif isinstance(error["input"], str):
            message += ", without quotes"
    elif kind == "greater_than_equal":
        message = f"must be at least {ctx['ge']}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx['le']}"
    elif kind == "greater_than":
        message = f"must be more than {ctx['gt']}"
    elif kind == "less_than":
        message = f"must be less than {ctx['lt']}"
    elif kind in ("too_short", "string_too_short"):
        message = "must not be empty"
    elif kind == "literal_error":
        message = f"must be one of {ctx['expected']}"
    elif kind == "value_error":
        message = str(ctx["error"])
    elif kind == "config":
        message = str(ctx["message"])
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    return message + _shown(error["input"]) if show else message


def _unknown_key(key: str, parent: type[BaseModel] | None) -> str:
    allowed = list(parent.model_fields) if parent else []
    message = "is not a known key"
    if key in _LEGACY_KEYS:
        message += ": it is from the legacy format; convert with bsky-backfill migrate-config"
    elif close := difflib.get_close_matches(key, allowed, n=1, cutoff=0.6):
        message += f": did you mean {close[0]}?"
    elif allowed:
        message += f": remove it, or use one of {', '.join(allowed)}"
    return message


def _shown(value: object) -> str:
    if value is None or not isinstance(value, str | int | float | bool):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + '...'})"


def _scrub(message: str, document: YamlDocument) -> str:
    for value in sorted(document.env_values, key=len, reverse=True):
        if len(value) >= _SCRUB_MIN_CHARS:
            message = message.replace(value, "<value from the environment>")
    return message


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` and without ``| None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _members(annotation: Any) -> dict[str, type[BaseModel]]:
    """Tag -> model for a union of models told apart by ``type``; empty for anything else."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for model in get_args(annotation):
        if (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and "type" in model.model_fields
        ):
            for tag in get_args(model.model_fields["type"].annotation):
                members[tag] = model
    return members


def _walk(loc: tuple[str | int, ...]) -> tuple[tuple[Key, ...], type[BaseModel] | None, Any]:
    """``loc`` as a key path (union tags dropped), the model holding its last key, and the
    annotation of the value there (None where the schema has no such key)."""
    current: Any = ConfigDocument
    path: list[Key] = []
    parent: type[BaseModel] | None = None
    for step in loc:
        annotation = _unwrap(current)
        members = _members(annotation)
        if isinstance(step, str) and step in members:
            current = members[step]
            continue
        parent = None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parent = annotation
            field = annotation.model_fields.get(step) if isinstance(step, str) else None
            current = field.annotation if field else None
        elif isinstance(step, int) and get_origin(annotation) is tuple:
            current = get_args(annotation)[0]
        else:
            current = None
        path.append(step)
    return tuple(path), parent, current
