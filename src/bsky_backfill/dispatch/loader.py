"""Load a dispatch config with the backfill config's machinery: the same YAML reader
(lines of every key, ``${NAME}``, no aliases or duplicate keys), the same file checks and
the same pydantic-error messages, each located by key path and line.

Two adaptations: the top level (``dispatch:`` alone) is checked here, since the shared
messages know only ``backfill:``; and the integration kind pydantic puts into an error's
location (``integrations[0].webhook.url``) is dropped, so the key is the one written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from bsky_backfill.config.loader import read_config_text
from bsky_backfill.config.messages import problems_from
from bsky_backfill.config.yamldoc import YamlDocument, read_yaml
from bsky_backfill.dispatch.config import INTEGRATION_TYPES, DispatchConfig, DispatchDocument
from bsky_backfill.errors import ConfigError, ConfigProblems

__all__ = ["load_dispatch_config", "load_dispatch_config_text"]

_EXAMPLE = "configs/examples/dispatch.yaml"
_KINDS = ", ".join(INTEGRATION_TYPES)
_KIND_MESSAGES = {
    "union_tag_invalid": f"is not a known type: use one of {_KINDS}",
    "union_tag_not_found": f"needs a type: add type: with one of {_KINDS}",
}


def load_dispatch_config(
    source: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DispatchConfig:
    """The validated config in ``source`` (a file, or YAML text: told apart as
    :func:`bsky_backfill.config.load_config` does). Relative paths resolve against
    ``base_dir``, by default the file's folder; ``${NAME}`` expands from ``environ``
    (default ``os.environ``).

    Raises ``ConfigError`` for one problem and ``ConfigProblems`` for several, each with
    ``source``, ``line`` and ``key``. Reads nothing but the config file.
    """
    text, name, folder = read_config_text(source)
    base = Path(base_dir) if base_dir is not None else folder
    return _load(text, name, base, os.environ if environ is None else environ)


def load_dispatch_config_text(
    text: str, *, base_dir: str | os.PathLike[str], environ: Mapping[str, str]
) -> DispatchConfig:
    """:func:`load_dispatch_config` for text never taken for a file name (the API's)."""
    return _load(text, None, Path(base_dir), environ)


def _load(
    text: str, name: str | None, base_dir: Path, environ: Mapping[str, str]
) -> DispatchConfig:
    try:
        document = read_yaml(text, environ=environ)
    except ConfigError as exc:
        exc.source = name
        raise
    problems = [*document.problems, *_top_level_problems(document)]
    config = None
    if not problems or (isinstance(document.data, dict) and "dispatch" in document.data):
        try:
            config = DispatchDocument.model_validate(
                {"dispatch": document.data["dispatch"]}, context={"base_dir": base_dir}
            ).dispatch
        except ValidationError as exc:
            problems += problems_from(_without_kinds(exc), document)
    if problems or config is None:
        problems.sort(key=lambda problem: problem.line or 0)
        for problem in problems:
            problem.source = name
        raise problems[0] if len(problems) == 1 else ConfigProblems(tuple(problems), source=name)
    return config


def _top_level_problems(document: YamlDocument) -> list[ConfigError]:
    data = document.data
    if not isinstance(data, dict) or "dispatch" not in data:
        return [ConfigError(f"needs a top-level dispatch: mapping (see {_EXAMPLE})", line=1)]
    return [
        ConfigError(
            "belongs in a backfill config (bsky-backfill run), not a dispatch config"
            if key == "backfill"
            else "is not a known key: a dispatch config has one top-level key, dispatch",
            key=str(key),
            line=document.lines.get((key,)),
        )
        for key in data
        if key != "dispatch"
    ]


def _without_kinds(exc: ValidationError) -> ValidationError:
    """``exc`` with the integration kind taken out of each location, messages kept."""
    details: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        kept = tuple(
            step
            for i, step in enumerate(loc)
            if not (i >= 2 and loc[i - 2] == "integrations" and step in INTEGRATION_TYPES)
        )
        kind, context = error["type"], dict(error.get("ctx") or {})
        if kind in _KIND_MESSAGES:  # the shared messages would list the backfill's kinds
            kept, kind = (*kept, "type"), "config"
            context = {"message": _KIND_MESSAGES[error["type"]]}
        # The message is already rendered; its context goes along for problems_from.
        custom = PydanticCustomError(kind, error["msg"], context)
        details.append(InitErrorDetails(type=custom, loc=kept, input=error["input"]))
    return ValidationError.from_exception_data(exc.title, details)
