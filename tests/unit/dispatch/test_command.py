"""``bsky-backfill dispatch``: help with an example, exit codes, one line per problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from bsky_backfill.cli import app
from tests.unit.dispatch.conftest import Receiver

runner = CliRunner()


def write(path: Path, dataset: Path, url: str) -> Path:
    path.write_text(
        "dispatch:\n  name: cmd\n"
        f"  dataset: {dataset}\n"
        "  network: {allow_private_addresses: true}\n"
        "  monitoring: {prometheus_port: 0, log_level: WARNING}\n"
        f"  integrations: [{{name: hook, type: webhook, url: '{url}', max_retries: 0}}]\n"
    )
    return path


def test_help_has_an_example() -> None:
    result = runner.invoke(app, ["dispatch", "--help"])
    assert result.exit_code == 0
    assert "Example: bsky-backfill dispatch" in result.output


def test_a_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "d.yaml"
    config.write_text("dispatch:\n  name: x\n  dataset: ./d\n  integrations: []\n  oops: 1\n")
    result = runner.invoke(app, ["dispatch", str(config)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:4: dispatch.integrations: must not be empty",
        f"{config}:5: dispatch.oops: is not a known key",
    ]


async def test_done_exits_0_with_a_summary(
    dataset: Path, tmp_path: Path, receiver: Receiver
) -> None:
    config = write(tmp_path / "d.yaml", dataset, receiver.url)
    result = await _invoke(config)
    assert result.exit_code == 0, result.output
    assert "hook: 40 sent in 1 batches, 0 already acknowledged" in result.stdout
    assert "dispatch cmd: 1 of 1 integrations done" in result.stdout


async def test_a_failed_integration_exits_1(dataset: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "d.yaml", dataset, "http://127.0.0.1:9/x")
    result = await _invoke(config)
    assert result.exit_code == 1
    assert "hook: 0 sent" in result.stdout
    assert "failed: HostUnavailable" in result.stdout


async def _invoke(config: Path) -> Result:
    """The command in a thread: it runs its own event loop, the receiver runs in ours."""
    return await asyncio.to_thread(runner.invoke, app, ["dispatch", str(config)])
