"""Shared fixtures. Tests needing node or a service call ``tests.support.require``:
locally a missing dependency skips the test, under CI it fails it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import require, shared_dir

pytest_plugins = ["tests.support.jobs", "tests.support.moto"]


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    path = shared_dir() / "interop"
    require(path.is_dir(), f"interop test data at {path}")
    return path
