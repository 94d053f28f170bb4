"""The most a config received over HTTP may ask of the server (kept light: the CLI
imports it for its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from bsky_backfill.errors import ConfigError

__all__ = ["ApiLimits"]


@dataclass(frozen=True)
class ApiLimits:
    """The most a config received over HTTP may ask of this server.

    ``requests_per_second``: the starting pace per PDS host (hosts' own headers still
    govern after that). ``max_concurrent_pds``: hosts fetched at once. ``max_repo_bytes``:
    the largest repo a job may download.
    """

    requests_per_second: float = 20.0
    max_concurrent_pds: int = 64
    max_repo_bytes: int = 4 * 1024**3

    def __post_init__(self) -> None:
        if self.requests_per_second <= 0 or self.max_concurrent_pds < 1 or self.max_repo_bytes < 1:
            raise ConfigError("server limits must be positive")
