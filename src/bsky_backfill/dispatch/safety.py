"""Config-time checks for a dispatch config received over HTTP, as
:mod:`bsky_backfill.api.safety` checks a backfill config: a dispatch config asks the
server to read local files and send data to URLs.

Refused, all problems at once, each at its key path: a local path (the dataset, a URI
list) outside the server's data roots; ``network.allow_private_addresses`` unless the
server allows it; a receiver (webhook or Redis URL) whose host is local, private or
does not resolve (the same host checks as the backfill's URLs); a ``state_url`` (where
a server keeps state is its operator's choice). Blocks (DNS, ``realpath``): run it off
the event loop.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bsky_backfill.api.safety import ApiPolicy, host_problem, path_problems
from bsky_backfill.config.yamldoc import format_key
from bsky_backfill.dispatch.config import DispatchConfig
from bsky_backfill.errors import ConfigError, ConfigProblems

__all__ = ["check_api_dispatch"]


def check_api_dispatch(config: DispatchConfig, policy: ApiPolicy) -> None:
    """Raise ``ConfigError`` (one problem) or ``ConfigProblems`` (several) unless
    ``config`` stays inside ``policy``; each names its key (``dispatch.<path>``)."""
    problems = path_problems(config, policy, "dispatch")
    if config.state_url is not None or config.state_schema is not None:
        problems.append(
            ConfigError(
                "is the server operator's choice, not a config's; remove it",
                key=_key(("state_url",)),
            )
        )
    if not policy.allow_private_addresses:
        if config.network.allow_private_addresses:
            problems.append(
                ConfigError(
                    "is refused by this server: a config sent to the API cannot allow "
                    "loopback or private addresses; remove it",
                    key=_key(("network", "allow_private_addresses")),
                )
            )
        for index, integration in enumerate(config.integrations):
            host = (urlsplit(integration.url).hostname or "").rstrip(".")
            problem = host_problem(host, policy.resolve)
            if problem is not None:
                problems.append(
                    ConfigError(
                        f"{problem}; the server sends data only to public hosts",
                        key=_key(("integrations", index, "url")),
                    )
                )
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigProblems(tuple(problems))


def _key(at: tuple[str | int, ...]) -> str:
    return format_key(("dispatch", *at))
