"""Test support: environment checks and harnesses for real servers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["REPO_ROOT", "free_port", "mandatory", "require", "shared_dir"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_dir() -> Path:
    """The project's ``shared/`` folder (interop data, real PDS kit), beside the checkout."""
    override = os.environ.get("BSKY_BACKFILL_SHARED")
    return Path(override) if override else REPO_ROOT.parent / "shared"


def mandatory() -> bool:
    """True under CI: then a missing dependency fails a test instead of skipping it."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(condition: bool, what: str) -> None:
    """Skip (locally) or fail (under CI) when ``condition`` does not hold."""
    if condition:
        return
    if mandatory():
        pytest.fail(f"required for CI but missing: {what}")
    pytest.skip(f"missing: {what}")
