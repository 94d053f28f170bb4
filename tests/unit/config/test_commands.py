"""`bsky-backfill validate` and `migrate-config`: output, error lines and exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bsky_backfill import cli
from bsky_backfill.cli import app
from bsky_backfill.errors import ConfigError, ConfigProblems
from tests.unit.config.helpers import MINIMAL, with_lines
from tests.unit.config.test_migrate import STUDY_USERS

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<key>backfill[\w.\[\]]*): .+$")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from bsky_backfill.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_validate_prints_a_summary_and_exits_0() -> None:
    result = run_cli("validate", str(CONFIGS / "default.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("default.yaml: valid")
    assert "hash        sha256:" in result.stdout
    assert len(result.stdout.splitlines()) <= 24
    assert result.stderr == ""


def test_validate_prints_one_located_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(with_lines("processing: {batch_size: 0}\nverify: maybe\ncolour: red\n"))
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    found = [PROBLEM_LINE.match(line) for line in lines]
    assert all(found), lines
    assert [(m["file"], m["line"], m["key"]) for m in found if m] == [
        (str(path), "5", "backfill.processing.batch_size"),
        (str(path), "6", "backfill.verify"),
        (str(path), "7", "backfill.colour"),
    ]
    assert "Traceback" not in result.stderr


def test_validate_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: no such file: check the path"


def test_validate_never_echoes_a_secret_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(
        with_lines(
            'monitoring: {alert_webhook_url: "https://h.example/${HOOK}", log_level: "${HOOK}"}'
        )
    )
    secret = "xoxb-very-secret-token"
    result = CliRunner().invoke(app, ["validate", str(path)], env={"HOOK": secret})
    assert result.exit_code == 2
    assert secret not in result.output
    assert "backfill.monitoring.log_level" in result.output
    path.write_text(with_lines('monitoring: {alert_webhook_url: "https://h.example/${HOOK}"}'))
    result = CliRunner().invoke(app, ["validate", str(path)], env={"HOOK": secret})
    assert result.exit_code == 0
    assert secret not in result.output
    assert "${HOOK}" in result.output


def test_validate_notes_local_inputs_that_do_not_exist_yet() -> None:
    result = CliRunner().invoke(
        app, ["validate", str(CONFIGS / "examples" / "engaged_posts_stage2.yaml")]
    )
    assert result.exit_code == 0
    assert "note: backfill.source.dataset:" in result.output


def test_migrate_config_prints_yaml_that_validates(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(STUDY_USERS)
    result = run_cli("migrate-config", str(old))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# Migrated from {old}")
    new = tmp_path / "new.yaml"
    new.write_text(result.stdout)
    assert run_cli("validate", str(new)).returncode == 0


def test_migrate_config_reports_problems_against_the_old_file(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(STUDY_USERS.replace('"app.bsky.feed.like"', '"likes"'))
    result = run_cli("migrate-config", str(old))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{old}:14: backfill.record_types[1]: is not an NSID")


def test_a_current_config_given_to_migrate_config_comes_back_valid(tmp_path: Path) -> None:
    path = tmp_path / "current.yaml"
    path.write_text(MINIMAL)
    result = CliRunner().invoke(app, ["migrate-config", str(path)])
    assert result.exit_code == 0
    assert "name: study" in result.output


def test_main_prints_each_config_problem_on_its_own_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail() -> None:
        raise ConfigProblems(
            (
                ConfigError("must be at least 1", key="backfill.x", line=3, source="c.yaml"),
                ConfigError("is empty", source="c.yaml"),
            ),
            source="c.yaml",
        )

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "error: c.yaml:3: backfill.x: must be at least 1\nerror: c.yaml: is empty\n"
    )


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ConfigError("m", key="backfill.k", line=4, source="f.yaml"), "f.yaml:4: backfill.k: m"),
        (ConfigError("m", line=4), "line 4: m"),
        (ConfigError("m", key="backfill.k"), "backfill.k: m"),
        (ConfigError("m", source="f.yaml"), "f.yaml: m"),
        (ConfigError("m"), "m"),
    ],
)
def test_a_config_error_prints_as_one_located_line(error: ConfigError, text: str) -> None:
    assert str(error) == text
    assert error.problems == (error,)
