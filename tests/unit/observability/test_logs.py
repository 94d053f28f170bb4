from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bsky_backfill.observability.logs import REDACTED, configure_logging, job_context, redact

logger = structlog.get_logger("tests.logs")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    """configure_logging is process-wide: put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def events(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_events_are_json_lines_with_the_job_id_and_their_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    with job_context("study-1"):
        logger.info("repo.retry", did="did:plc:x", host="pds.example", attempt=2, duration=0.5)
    [event] = events(out)
    assert event["event"] == "repo.retry"
    assert event["job_id"] == "study-1"
    assert (event["did"], event["host"], event["attempt"]) == ("did:plc:x", "pds.example", 2)
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_the_level_is_honoured() -> None:
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    logger.info("hidden")
    logger.warning("shown")
    assert [e["event"] for e in events(out)] == ["shown"]


def test_library_logs_come_out_in_the_same_format() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    with job_context("j"):
        logging.getLogger("celery.worker").info("Task %s succeeded", "abc")
    [event] = events(out)
    assert event["event"] == "Task abc succeeded"
    assert event["job_id"] == "j"


def test_a_terminal_gets_readable_lines() -> None:
    out = Terminal()
    configure_logging("INFO", stream=out)
    logger.info("job.started", sink="parquet")
    line = out.getvalue()
    assert "job.started" in line
    assert "sink" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


SECRETS = {
    "api key": "bbk_k1a2b3_S3cr3tS3cr3tS3cr3t",
    "password in URL": "postgresql://backfill:hunter2pass@db.internal:5432/jobs",
    "bearer token": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "aws secret": "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "slack hook": "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
}
LEAKS = ("S3cr3tS3cr3t", "hunter2pass", "eyJhbGciOiJIUzI1NiJ9", "wJalrXUtnFEMI", "XXXXXXXXXXXX")


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_secret_values_are_blanked_wherever_they_appear(kind: str) -> None:
    event = redact(
        None, "info", {"event": f"failed: {SECRETS[kind]}", "nested": {"x": [SECRETS[kind]]}}
    )
    text = json.dumps(event)
    assert not any(leak in text for leak in LEAKS), text
    assert REDACTED in text


def test_fields_named_like_secrets_are_blanked_and_others_kept() -> None:
    event = redact(
        None,
        "info",
        {"event": "x", "password": "p", "api_key": "k", "token": "t", "host": "pds.example"},
    )
    assert event == {
        "event": "x",
        "password": REDACTED,
        "api_key": REDACTED,
        "token": REDACTED,
        "host": "pds.example",
    }


def test_secrets_in_library_logs_and_exceptions_are_blanked_too() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", stream=out)
    logging.getLogger("sqlalchemy").warning("connect to %s", SECRETS["password in URL"])
    try:
        raise ValueError(SECRETS["api key"])
    except ValueError:
        logger.exception("boom")
    assert not any(leak in out.getvalue() for leak in LEAKS), out.getvalue()
