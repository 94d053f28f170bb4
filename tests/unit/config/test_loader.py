"""load_config: located errors with fixes, unknown keys, ${ENV}, files versus text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bsky_backfill.config import load_config
from bsky_backfill.config.loader import MAX_CONFIG_BYTES, load_config_text
from bsky_backfill.errors import ConfigError, ConfigProblems
from tests.unit.config.helpers import FIRST_EXTRA_LINE, MINIMAL, only_problem, problems, with_lines

# (text appended to MINIMAL, key, line offset from the first appended line, the fix named)
ERRORS = [
    ("processing:\n  batch_size: 0", "backfill.processing.batch_size", 1, "at least 1 (got 0)"),
    ("processing:\n  max_retries: 99", "backfill.processing.max_retries", 1, "at most 20"),
    (
        "processing: {requests_per_second: '10'}",
        "backfill.processing.requests_per_second",
        0,
        "must be a number, without quotes",
    ),
    ("processing: {batch_size: 2.5}", "backfill.processing.batch_size", 0, "a whole number"),
    ("verify: maybe", "backfill.verify", 0, "one of 'full', 'hashes' or 'none'"),
    ("version: 1.0", "backfill.version", 0, "put the value in quotes"),
    ("monitoring:\n  prometheus_port: 70000", "backfill.monitoring.prometheus_port", 1, "65535"),
    (
        "network: {allow_private_addresses: 'yes'}",
        "backfill.network.allow_private_addresses",
        0,
        "true or false",
    ),
    ("identity: {plc_url: 'ftp://plc'}", "backfill.identity.plc_url", 0, "http:// or https://"),
    ("identity: {plc_url: 'http://[::1'}", "backfill.identity.plc_url", 0, "is not a URL"),
    ("identity: {plc_url: 'http://h:99999'}", "backfill.identity.plc_url", 0, "invalid port"),
    (
        "identity: {plc_url: 'https://plc.directory/x'}",
        "backfill.identity.plc_url",
        0,
        "base URL only",
    ),
    (
        "record_types:\n  - app.bsky.feed.post\n  - post",
        "backfill.record_types[1]",
        2,
        "e.g. app.bsky.feed.post",
    ),
    ("record_types: []", "backfill.record_types", 0, "list at least one"),
    (
        "storage:\n  type: s4",
        "backfill.storage.type",
        1,
        "use one of parquet, sqlite, jsonl, s3, dynamodb",
    ),
    ("storage: {type: s3, path: ./local}", "backfill.storage.path", 0, "s3://bucket"),
    (
        "storage: {type: dynamodb, table_name: x}",
        "backfill.storage.table_name",
        0,
        "e.g. backfill_results",
    ),
    ("storage: [parquet]", "backfill.storage", 0, "a mapping"),
    (
        "filters: {subject_uris: {path: uris.xlsx}}",
        "backfill.filters.subject_uris.path",
        0,
        ".parquet",
    ),
    (
        "monitoring: {alert_webhook_url: 'hooks.example.com'}",
        "backfill.monitoring.alert_webhook_url",
        0,
        "https://",
    ),
]


@pytest.mark.parametrize(("extra", "key", "offset", "fix"), ERRORS)
def test_each_error_names_its_key_line_and_fix(extra: str, key: str, offset: int, fix: str) -> None:
    problem = only_problem(with_lines(extra))
    assert problem.key == key
    assert problem.line == FIRST_EXTRA_LINE + offset
    assert fix in problem.message


@pytest.mark.parametrize(
    ("source", "key", "fix"),
    [
        ("{path: dids.txt}", "backfill.source", "add type: with one of file, inline, sqlite"),
        ("{type: csv, path: d.csv}", "backfill.source.type", "use one of file, inline"),
        ("{type: file}", "backfill.source.path", "is required: add path: dids.txt"),
        ("{type: file, path: dids.xlsx}", "backfill.source.path", ".txt (one per line)"),
        ("{type: inline, dids: [did:plc:abc, nope]}", "backfill.source.dids[1]", "did:plc:"),
        (
            "{type: sqlite, path: d.db, query: DELETE FROM dids}",
            "backfill.source.query",
            "one SELECT",
        ),
        ("{type: s3, uri: 'https://bucket/x.csv'}", "backfill.source.uri", "s3://bucket/key"),
        ("{type: s3, uri: 's3://Bad_Bucket/x.csv'}", "backfill.source.uri", "invalid bucket"),
        ("{type: pds, hosts: []}", "backfill.source.hosts", "must not be empty"),
        (
            "{type: derived, dataset: d, relations: [mention]}",
            "backfill.source.relations[0]",
            "'like', 'repost', 'reply', 'quote' or 'follow'",
        ),
        ("{type: derived, dataset: 's3://b/k'}", "backfill.source.dataset", "local path"),
    ],
)
def test_source_errors_name_the_key_and_fix(source: str, key: str, fix: str) -> None:
    text = MINIMAL.replace("{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}", source)
    problem = only_problem(text)
    assert (problem.key, problem.line) == (key, 3)
    assert fix in problem.message


@pytest.mark.parametrize(
    ("start", "fix"),
    [
        ("2024-09-28-00:00:00", "legacy form"),
        ("2025-01-02T00:00:00", "add Z for UTC"),
        ("2025-02-30", "not a calendar date"),
        ("next tuesday", 'write a date "2025-01-02"'),
    ],
)
def test_bad_dates_say_how_to_write_one(start: str, fix: str) -> None:
    problem = only_problem(MINIMAL.replace('"2025-01-02"', f'"{start}"'))
    assert (problem.key, problem.line) == ("backfill.time_range.start_date", 4)
    assert fix in problem.message


@pytest.mark.parametrize(
    ("missing", "key", "fix"),
    [
        ("  name: study\n", "backfill.name", "add name: my_backfill"),
        (
            "  source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}\n",
            "backfill.source",
            "add source: {type: file",
        ),
        (
            '  time_range: {start_date: "2025-01-02"}\n',
            "backfill.time_range",
            "add time_range: {start_date:",
        ),
    ],
)
def test_a_missing_required_key_is_located_at_its_parent(missing: str, key: str, fix: str) -> None:
    problem = only_problem(MINIMAL.replace(missing, ""))
    assert (problem.key, problem.line) == (key, 1)
    assert fix in problem.message


def test_a_missing_start_date_points_at_time_range() -> None:
    problem = only_problem(MINIMAL.replace('{start_date: "2025-01-02"}', "{end_date: 2025-02-01}"))
    assert (problem.key, problem.line) == ("backfill.time_range.start_date", 4)


@pytest.mark.parametrize(
    ("text", "key", "line", "hint"),
    [
        (MINIMAL + "extra: 1\n", "extra", 5, "use one of backfill"),
        (with_lines("colour: red"), "backfill.colour", 5, "remove it, or use one of name,"),
        (
            with_lines("processing:\n  batch: 5"),
            "backfill.processing.batch",
            6,
            "did you mean batch_size?",
        ),
        (
            MINIMAL.replace(
                "{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}",
                "{type: file, path: d.txt, colum: did}",
            ),
            "backfill.source.colum",
            3,
            "did you mean column?",
        ),
        (
            with_lines("filters:\n  subject_uris:\n    path: u.txt\n    colum: uri"),
            "backfill.filters.subject_uris.colum",
            8,
            "did you mean column?",
        ),
        (
            with_lines("storage:\n  type: dynamodb\n  tablename: t"),
            "backfill.storage.tablename",
            7,
            "did you mean table_name?",
        ),
        (with_lines("plc_storage: {type: sqlite}"), "backfill.plc_storage", 5, "migrate-config"),
    ],
)
def test_unknown_keys_are_refused_at_every_depth(text: str, key: str, line: int, hint: str) -> None:
    problem = only_problem(text)
    assert (problem.key, problem.line) == (key, line)
    assert "is not a known key" in problem.message
    assert hint in problem.message


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = with_lines(
        """\
        version: 2
        processing:
          batch_size: -1
          max_concurrent_pds: 0
        verify: all
        """
    ).replace("name: study", "name: Study!")
    with pytest.raises(ConfigProblems) as caught:
        load_config(text, environ={})
    found = [(p.key, p.line) for p in caught.value.problems]
    assert found == [
        ("backfill.name", 2),
        ("backfill.version", 5),
        ("backfill.processing.batch_size", 7),
        ("backfill.processing.max_concurrent_pds", 8),
        ("backfill.verify", 9),
    ]
    assert str(caught.value).count("\n") == 4
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("backfill:\n  name: [unclosed\n", 3, "not valid YAML"),
        ("backfill:\n\tname: x\n", 2, "not valid YAML"),
        ("backfill:\n  name: a\n  name: b\n", 3, "appears twice (first on line 2)"),
        ("a: &x 1\nb: *x\n", 2, "aliases"),
        ("--- {}\n--- {}\n", 2, "single document"),
        ("backfill: !!python/object:os.system {}\n", 1, "not supported"),
        ("backfill: {name: !!int abc}\n", 1, "not a valid int"),
    ],
)
def test_yaml_problems_are_located(text: str, line: int, message: str) -> None:
    problem = only_problem(text)
    assert problem.line == line
    assert message in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_is_an_error(text: str) -> None:
    assert "is empty" in only_problem(text).message


@pytest.mark.parametrize("text", ["[1, 2]\n", "just text\n", "backfill: 3\n", "backfill:\n"])
def test_the_top_level_must_be_a_backfill_mapping(text: str) -> None:
    assert "mapping" in only_problem(text).message


# --- ${ENV} --------------------------------------------------------------------------------

SECRET = "hunter2-correct-horse-battery"


def test_env_references_expand_and_unquoted_ones_are_retyped() -> None:
    text = with_lines(
        """\
        version: "${VERSION}"
        monitoring:
          prometheus_port: ${PORT}
          alert_on_failure: ${ALERTS}
          alert_webhook_url: https://hooks.example.com/services/${TOKEN}
        storage: {type: parquet, path: "${OUT}/runs"}
        """
    )
    environ = {"VERSION": "7", "PORT": "9100", "ALERTS": "false", "TOKEN": SECRET, "OUT": "/o"}
    config = load_config(text, environ=environ)
    assert config.version == "7"
    assert config.monitoring.prometheus_port == 9100
    assert config.monitoring.alert_on_failure is False
    assert config.monitoring.alert_webhook_url == f"https://hooks.example.com/services/{SECRET}"
    assert str(config.storage.path) == "/o/runs"  # type: ignore[union-attr]


def test_env_values_never_reach_the_redacted_config_or_change_the_hash() -> None:
    text = with_lines(
        """\
        identity: {plc_url: "https://${PLC_HOST}"}
        source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur, "did:plc:${DID}"]}
        monitoring: {alert_webhook_url: "https://hooks.example.com/${TOKEN}"}
        """
    ).replace("  source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}\n", "")
    first = load_config(text, environ={"PLC_HOST": "plc.internal", "DID": "abc", "TOKEN": SECRET})
    redacted = json.dumps(first.redacted())
    for value in (SECRET, "plc.internal", "did:plc:abc"):
        assert value not in redacted
    backfill = first.redacted()["backfill"]
    assert backfill["identity"]["plc_url"] == "https://${PLC_HOST}"
    assert backfill["source"]["dids"] == ["did:plc:z72i7hdynmk6r22z27h6tvur", "did:plc:${DID}"]
    assert backfill["monitoring"]["alert_webhook_url"] == "https://hooks.example.com/${TOKEN}"
    second = load_config(text, environ={"PLC_HOST": "plc.internal", "DID": "abc", "TOKEN": "x"})
    assert first.config_hash() == second.config_hash()


@pytest.mark.parametrize(
    "extra",
    [
        "name: ${SECRET}",  # name and source replace the line of MINIMAL (see below)
        "monitoring: {log_level: '${SECRET}'}",
        "storage: {type: '${SECRET}'}",
        "record_types: ['${SECRET}']",
        "identity: {plc_url: '${SECRET}'}",
        "identity: {plc_url: 'https://${SECRET}/path'}",
        "processing: {batch_size: '${SECRET}'}",
        "monitoring: {alert_webhook_url: '${SECRET}'}",
        "source: {type: sqlite, path: x.db, query: '${SECRET}'}",
        "source: {type: s3, uri: '${SECRET}'}",
        "verify: ${SECRET}",
        "processing: {batch_size: !!int '${SECRET}'}",
    ],
)
def test_a_secret_from_the_environment_never_appears_in_error_text(extra: str) -> None:
    text = with_lines(extra)
    if extra.startswith(("name:", "source:")):
        key = extra.split(":", 1)[0]
        text = "\n".join(line for line in MINIMAL.splitlines() if f"  {key}:" not in line)
        text += "\n" + "  " + extra + "\n"
    secret = "s3cr3t-Value_with:odd/chars"
    with pytest.raises(ConfigError) as caught:
        load_config(text, environ={"SECRET": secret})
    assert "s3cr3t" not in str(caught.value)
    assert all("s3cr3t" not in str(p) for p in caught.value.problems)


def test_a_missing_variable_names_it_and_its_key_with_the_other_problems() -> None:
    text = with_lines(
        """\
        processing: {batch_size: 0}
        monitoring:
          alert_webhook_url: "https://hooks.example.com/${HOOK_TOKEN}"
        """
    )
    found = problems(text, environ={})
    assert [(p.key, p.line) for p in found] == [
        ("backfill.processing.batch_size", 5),
        ("backfill.monitoring.alert_webhook_url", 7),
    ]
    assert "environment variable HOOK_TOKEN is not set" in found[1].message
    assert "export it" in found[1].message


def test_dollar_dollar_brace_is_a_literal_and_a_bad_reference_is_an_error() -> None:
    config = load_config(
        with_lines("source: {type: sqlite, path: d.db, query: 'SELECT \"$${x}\" FROM t'}").replace(
            "  source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}\n", ""
        ),
        environ={},
    )
    assert config.source.query == 'SELECT "${x}" FROM t'  # type: ignore[union-attr]
    problem = only_problem(with_lines("version: ${not-a-name}"))
    assert (problem.key, problem.line) == ("backfill.version", 5)
    assert "${NAME}" in problem.message


def test_references_are_only_expanded_in_values_from_the_given_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BSKY_BACKFILL_TEST_VERSION", "from-os-environ")
    text = with_lines('version: "${BSKY_BACKFILL_TEST_VERSION}"')
    assert load_config(text).version == "from-os-environ"
    assert "not set" in only_problem(text, environ={}).message


# --- files and text ------------------------------------------------------------------------


def test_a_file_error_carries_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(with_lines("verify: maybe"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}:5: backfill.verify: must be one of")


def test_a_one_line_str_naming_a_file_is_read_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.yml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert load_config("job.yml", environ={}).name == "study"
    with pytest.raises(ConfigError, match="no such file"):
        load_config("missing.yaml", environ={})


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe backfill", "not UTF-8"), (b"#" * (MAX_CONFIG_BYTES + 1), "is over")],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path, environ={})


def test_text_naming_an_existing_file_is_still_text_for_load_config_text(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("backfill: {name: leaked}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_text(str(secret), base_dir=tmp_path, environ={})
    assert "leaked" not in str(caught.value)
