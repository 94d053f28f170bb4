"""Structured logs (structlog): one JSON object per line when stderr is not a terminal, a
readable line when it is. Library logs (uvicorn, Celery, botocore) go through the same
renderer, so a log collector sees one format.

Every event carries what is bound in the context: ``job_id`` for the whole of a job run
(:func:`job_context`), and the event's own fields (did, host, attempt, seconds...).
Nothing secret reaches the output: :func:`redact` runs last before rendering and blanks
fields named like secrets and secret-looking values anywhere in an event (API keys,
bearer tokens, passwords in URLs, AWS secret keys).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LOG_LEVELS", "configure_logging", "job_context", "redact"]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

REDACTED: Final = "[redacted]"
_SECRET_KEY: Final = re.compile(
    r"pass(word|wd)?|secret|token|authorization|api_?key|credential|cookie", re.IGNORECASE
)
_SECRET_VALUES: Final = (
    (re.compile(r"\bbbk_[A-Za-z0-9]+_[A-Za-z0-9_-]+"), "bbk_" + REDACTED),  # our API keys
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?i)(secret[_-]?access[_-]?key\W{1,3})[A-Za-z0-9/+=]{20,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)(hooks\.slack\.com/services/)\S+"), r"\1" + REDACTED),
)
_NOISY: Final = (
    "aiohttp.access",
    "alembic",
    "asyncio",
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
)


def redact(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """A structlog processor: secrets out of every field (see the module docstring)."""
    for key in list(event):
        event[key] = _redacted(key, event[key])
    return event


def _redacted(key: object, value: Any) -> Any:
    if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        for pattern, replacement in _SECRET_VALUES:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, MutableMapping):
        return {k: _redacted(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(None, item) for item in value]
    return value


def configure_logging(
    level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Send structlog and standard-library logs to ``stream`` (stderr) at ``level``:
    JSON lines, or readable lines when ``json`` is False (default: when ``stream`` is a
    terminal). Safe to call again (``run`` does, with the config's ``log_level``)."""
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = max(logging.WARNING, root.level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(quiet)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """``job_id`` on every event logged in this context (tasks started in it inherit it)."""
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        yield
