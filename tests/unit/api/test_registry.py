"""The server's registry: config versions and the jobs it started, across reopenings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bsky_backfill.api.registry import Registry, StartedJob


async def test_configs_keep_every_version_and_list_the_latest(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "server.sqlite")
    try:
        first = await registry.save_config("study", "backfill: {name: study}\n", "key1")
        second = await registry.save_config("study", "backfill: {name: study} # v2\n", "key2")
        other = await registry.save_config("alpha", "backfill: {name: alpha}\n", "key1")
        assert (first.version, second.version, other.version) == (1, 2, 1)
        assert first.sha256 != second.sha256
        assert [(c.name, c.version) for c in await registry.configs()] == [
            ("alpha", 1),
            ("study", 2),
        ]
        assert await registry.config("study") == second
        assert await registry.config("study", 1) == first
        assert await registry.config("study", 3) is None
        assert await registry.config("none") is None
    finally:
        await registry.aclose()


async def test_started_jobs_survive_a_reopening_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "server.sqlite"
    registry = await Registry.open(path)
    older = StartedJob("a", "a", 1, str(tmp_path / "a.sqlite"), datetime(2026, 1, 1, tzinfo=UTC))
    newer = StartedJob(
        "b", None, None, str(tmp_path / "b.sqlite"), datetime(2026, 1, 2, tzinfo=UTC)
    )
    try:
        await registry.record_job(older)
        await registry.record_job(newer)
        await registry.record_job(older)  # started again: one entry, updated
    finally:
        await registry.aclose()
    reopened = await Registry.open(path)
    try:
        assert await reopened.jobs() == [newer, older]
    finally:
        await reopened.aclose()
