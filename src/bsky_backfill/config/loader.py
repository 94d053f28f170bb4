"""Load a config: read the YAML, expand ``${NAME}``, validate, and locate every problem.

Every problem is reported at once, each as a ``ConfigError`` naming the key path, its line
in the file, what is wrong and how to fix it; values that came from the environment are
never echoed, logged or stored (see :meth:`BackfillConfig.redacted`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from bsky_backfill.config.messages import problems_from
from bsky_backfill.config.schema import BackfillConfig, ConfigDocument
from bsky_backfill.config.yamldoc import read_yaml
from bsky_backfill.errors import ConfigError, ConfigProblems

__all__ = ["MAX_CONFIG_BYTES", "load_config", "load_config_text", "read_config_text"]

MAX_CONFIG_BYTES = 1024**2
"""A config is a page of YAML; anything much larger is a mistake (or an attack on the API)."""


def load_config(
    source: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BackfillConfig:
    """The validated, normalised config in ``source``: a file, or YAML text.

    A ``Path`` (any ``os.PathLike``) is a file; so is a one-line ``str`` that names an
    existing file or ends in ``.yaml``/``.yml``; any other ``str`` is YAML text. Relative
    paths inside resolve against ``base_dir``, by default the file's folder (for text, the
    working directory). ``${NAME}`` references expand from ``environ`` (default
    ``os.environ``).

    Raises ``ConfigError`` for one problem and ``ConfigProblems`` for several; each has
    ``source`` (the file as given, None for text), ``line`` and ``key`` where known. Pure
    apart from reading the file: no paths inside the config are checked for existence.
    """
    text, name, folder = read_config_text(source)
    return _load(text, name, Path(base_dir) if base_dir is not None else folder, environ)


def load_config_text(
    text: str, *, base_dir: str | os.PathLike[str], environ: Mapping[str, str]
) -> BackfillConfig:
    """``load_config`` for YAML text that is never taken for a file name, whatever it
    holds: what a server must use for configs it receives."""
    return _load(text, None, Path(base_dir), environ)


def _load(
    text: str, name: str | None, base_dir: Path, environ: Mapping[str, str] | None
) -> BackfillConfig:
    try:
        document = read_yaml(text, environ=os.environ if environ is None else environ)
    except ConfigError as exc:
        exc.source = name
        raise
    if document.data is None:
        raise ConfigError(
            "is empty: a config needs a top-level backfill: mapping (see configs/default.yaml)",
            source=name,
        )
    problems = list(document.problems)
    context = {"base_dir": base_dir}
    try:
        config = ConfigDocument.model_validate(document.data, context=context).backfill
    except ValidationError as exc:
        problems += problems_from(exc, document)
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)
        for problem in problems:
            problem.source = name
        raise problems[0] if len(problems) == 1 else ConfigProblems(tuple(problems), source=name)
    below_backfill = {
        path[1:]: written
        for path, written in document.env_fields.items()
        if path[:1] == ("backfill",) and len(path) > 1
    }
    return config.with_env_fields(below_backfill)


def read_config_text(source: str | os.PathLike[str]) -> tuple[str, str | None, Path]:
    """``(text, file name as given or None, folder for relative paths)`` of ``source``.

    ``source`` is told apart as :func:`load_config` describes. Raises ``ConfigError`` for a
    missing, unreadable, non-UTF-8 or oversized file, or oversized text.
    """
    if isinstance(source, str) and not _names_a_file(source):
        if len(source.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
            raise ConfigError(f"is over {MAX_CONFIG_BYTES} bytes: a config is a page of YAML")
        return source, None, Path.cwd()
    path = Path(source)
    name = str(source)
    try:
        if not path.is_file():
            raise ConfigError("no such file: check the path", source=name)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"is over {MAX_CONFIG_BYTES} bytes: a config is a page of YAML", source=name
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text: save it as UTF-8", source=name) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "invalid path"
        raise ConfigError(f"cannot be read ({reason})", source=name) from None
    return text, name, path.parent.absolute()


def _names_a_file(text: str) -> bool:
    if "\n" in text:
        return False
    if text.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long, or a NUL: text, not a file name
        return False
