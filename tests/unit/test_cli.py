from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.cli import app
from tests.support.moto import Moto
from tests.support.repos import DID, KEY, make_repo

runner = CliRunner()
COMMANDS = [
    "inspect",
    "demo",
    "run",
    "jobs",
    "status",
    "fakenet",
    "validate",
    "migrate-config",
    "worker",
    "cancel",
    "serve",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: bsky-backfill" in result.output


def test_inspect_summarises_a_verified_repo(tmp_path: Path) -> None:
    repo = make_repo(60)
    path = tmp_path / "repo.car"
    path.write_bytes(repo.car)
    result = runner.invoke(app, ["inspect", str(path), "--key", KEY.did_key, "--did", DID])
    assert result.exit_code == 0, result.output
    assert DID in result.output
    assert "total" in result.output
    assert "60" in result.output


def test_inspect_jsonl_prints_one_record_per_line(tmp_path: Path) -> None:
    repo = make_repo(25)
    path = tmp_path / "repo.car"
    path.write_bytes(repo.car)
    result = runner.invoke(app, ["inspect", str(path), "--verify", "hashes", "--jsonl"])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 25
    assert {line["cid"] for line in lines} == {
        str(c.encode("base32")) for c in repo.record_cids.values()
    }
    assert all(line["uri"].startswith(f"at://{DID}/") for line in lines)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from bsky_backfill.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_tampered_repo_gives_one_error_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "repo.car"
    path.write_bytes(make_repo(5).car)
    result = run_cli("inspect", str(path), "--key", Keypair.from_seed("k256", "x").did_key)
    assert result.returncode == 1
    assert result.stderr.startswith("error: BadSignature: the commit")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "missing.car"], "no such file"),
        (["inspect", "x.car", "--verify", "full"], "needs --key"),
        (["inspect", "x.car", "--verify", "maybe"], "must be full, hashes or none"),
        (["worker", "--pool", "gevent"], "choose prefork, solo or threads"),
        (["serve", "--broker", "redis://127.0.0.1:6379/0"], "--broker needs --state-url"),
        (["serve", "--state-url", "postgresql://db/x"], "--state-url goes with --broker"),
        (
            ["serve", "--broker", "redis://h/0", "--state-url", "mysql://db/x"],
            "--broker / --state-url",
        ),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_demo_runs_a_job_on_the_simulated_network_and_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--accounts", "60", "--hosts", "3", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact: every record and every status matches" in result.stdout
    assert (out / "dataset" / "manifest.json").is_file()
    listed = run_cli("jobs", str(out))
    assert "demo" in listed.stdout
    assert "completed" in listed.stdout
    shown = run_cli("status", str(out / "demo.yaml"))
    assert shown.returncode == 0, shown.stderr
    assert "complete" in shown.stdout
    assert run_cli("status", "nope", "--state", str(out)).returncode == 1
    again = run_cli("demo", "--accounts", "60", "--hosts", "3", "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr  # replaces its own folder


def test_demo_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    result = run_cli("demo", "--out", str(tmp_path))
    assert result.returncode != 0
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("bsky-backfill ")


def test_run_with_a_bad_config_exits_2_naming_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("backfill:\n  name: x\n  source: {type: inline, dids: []}\n  bogus: 1\n")
    result = run_cli("run", str(config))
    assert result.returncode == 2
    assert "bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_into_a_missing_dynamodb_table_exits_1_with_one_line_naming_it(
    tmp_path: Path, aws: Moto
) -> None:
    config = tmp_path / "cloud.yaml"
    config.write_text(
        "backfill:\n  name: x\n  source: {type: inline, dids: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]}\n"
        '  time_range: {start_date: "2025-01-01"}\n'
        f"  storage: {{type: dynamodb, table_name: results, endpoint_url: '{aws.url}'}}\n"
    )
    result = run_cli("run", str(config))
    assert result.returncode == 1, result.stderr
    *logged, error = result.stderr.splitlines()  # the log events, then the one-line error
    assert error.startswith("error: StorageMissing: DynamoDB table results does not exist")
    assert "create_tables: true" in error
    assert [json.loads(line)["event"] for line in logged][-1] == "job.failed"
    assert "Traceback" not in result.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_is_kept_in_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import tempfile

    from bsky_backfill import cli

    def broken() -> None:
        raise ValueError("an invariant broke")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "internal error" in line
    assert "ValueError: an invariant broke" in line
    (kept,) = tmp_path.glob("bsky-backfill-error-*.txt")
    assert str(kept) in line
    assert "Traceback" in kept.read_text()
