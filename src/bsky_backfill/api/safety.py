"""Config-time checks for a backfill config received over HTTP, where a config is a request
to read and write local files and to send requests to URLs on the server's behalf.

:func:`check_api_config` refuses, all problems at once, each at its key path:

- a local path (any ``Path`` in the config: sources, filters, storage, work folders) that,
  symlinks followed and ``..`` collapsed, lies outside every data root of the server;
- ``network.allow_private_addresses: true``, unless the server allows it: a config may
  not grant itself access to the server's own network;
- a URL the job would send requests to (``identity.plc_url``, a ``pds`` source's hosts,
  an S3 / DynamoDB ``endpoint_url``, ``monitoring.alert_webhook_url``) whose host is a
  local name, or an IP literal or name resolving to an address that is not public
  (loopback, private, link-local such as cloud metadata at 169.254.169.254, multicast,
  reserved, unspecified; IPv4 inside IPv6 judged as IPv4), or a name that does not resolve;
- a ``distributed`` section: where a server's jobs keep shared state is the operator's
  choice (``serve --broker``), never a caller's;
- a pace, concurrency or repo size above the server's :class:`ApiLimits`: a caller must
  not be able to make the server hammer PDS hosts (getting its address banned) or hold
  more memory and connections than its operator allows.

This is a check at submission time. Names are resolved now and may resolve differently
when the job runs (DNS rebinding); the engine re-checks the PDS endpoints it learns from
DID documents (:mod:`bsky_backfill.core.netguard`). Paths are judged against the file
system now, so the data roots must not be writable by anyone the server does not trust
to place symlinks there.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel

from bsky_backfill.api.limits import ApiLimits
from bsky_backfill.config.schema import (
    BackfillConfig,
    Distributed,
    DynamoDbStorage,
    PdsSource,
    S3Source,
    S3Storage,
)
from bsky_backfill.config.yamldoc import format_key
from bsky_backfill.core.netguard import is_public_ip
from bsky_backfill.errors import ConfigError, ConfigProblems

__all__ = [
    "MAX_CONFIG_BYTES",
    "ApiLimits",
    "ApiPolicy",
    "check_api_config",
    "check_config_size",
    "host_problem",
    "is_inside",
    "local_paths",
    "path_problems",
    "resolve_host",
]

MAX_CONFIG_BYTES: Final = 256 * 1024
"""The largest config body the API accepts, in UTF-8 bytes: a config is a page of YAML."""

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_KeyPath = tuple[str | int, ...]

_LOCAL_NAMES: Final = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
_FIX_ADDRESS: Final = "the server sends requests only to public hosts; use a public URL"


def resolve_host(host: str) -> list[str]:
    """The IP addresses ``host`` resolves to, as text, through the system resolver.

    Blocks for as long as the system resolver takes: call it (and so
    :func:`check_api_config`) off the event loop. Raises ``OSError`` when the name does
    not resolve, ``UnicodeError`` when it cannot be encoded as IDNA.
    """
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class ApiPolicy:
    """What a config received over HTTP may reach on this server.

    ``data_roots``: every local path in a config must lie inside one (symlinks followed,
    for the roots too). ``allow_private_addresses``: the server-side switch for test
    networks on loopback; without it a config cannot ask for private addresses.
    ``limits``: the most a config may ask for. ``resolve``: host name -> IP address
    strings, raising ``OSError`` or returning an empty list for a name that does not
    resolve (tests pass a fake).
    """

    data_roots: tuple[Path, ...]
    allow_private_addresses: bool = False
    limits: ApiLimits = field(default_factory=ApiLimits)
    resolve: Callable[[str], list[str]] = resolve_host

    def __post_init__(self) -> None:
        if not self.data_roots:
            raise ValueError("ApiPolicy needs at least one data root")


def check_config_size(text: str) -> None:
    """Raise ``ConfigError`` if ``text`` is over :data:`MAX_CONFIG_BYTES` in UTF-8."""
    # A character is at least one byte: a long text is too large without encoding it.
    size = len(text) if len(text) > MAX_CONFIG_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"is over {MAX_CONFIG_BYTES} bytes: a config is a page of YAML; "
            "list many DIDs in a file inside a data root (source type: file)"
        )


def check_api_config(config: BackfillConfig, policy: ApiPolicy) -> None:
    """Raise unless ``config`` stays inside ``policy`` (see the module docstring).

    Raises ``ConfigError`` for one problem, ``ConfigProblems`` for several; each has
    ``key``, the dotted field path such as ``backfill.source.path``. Touches the file
    system (``realpath``) and resolves host names with ``policy.resolve``: it blocks.
    """
    problems = [*path_problems(config, policy), *_limit_problems(config, policy.limits)]
    if config.distributed != Distributed():
        problems.append(
            ConfigError(
                "is set by the server's operator (serve --broker, --state-url), not by a "
                "config sent to the API; remove it",
                key=_key(("distributed",)),
            )
        )
    if not policy.allow_private_addresses:
        problems += _network_problems(config, policy)
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigProblems(tuple(problems))


# --- local paths -------------------------------------------------------------------------


def path_problems(
    config: BaseModel, policy: ApiPolicy, section: str = "backfill"
) -> list[ConfigError]:
    """A problem for every local path in ``config`` (its keys under ``section``) that
    lies outside the server's data roots."""
    roots = tuple(Path(os.path.realpath(root)) for root in policy.data_roots)
    shown = ", ".join(str(root) for root in policy.data_roots)
    return [
        ConfigError(
            f"must be inside one of the server's data roots: {shown} (symlinks are followed "
            "and '..' collapsed); give a path below one of them",
            key=format_key((section, *at)),
        )
        for at, path in local_paths(config)
        if not is_inside(path, roots)
    ]


def local_paths(node: object, at: _KeyPath = ()) -> Iterator[tuple[_KeyPath, PurePath]]:
    """Every ``Path`` value in the config with its key path below ``backfill``.

    Found by walking the models rather than listing fields, so that a path field added
    to the schema later is checked without anyone remembering to add it here.
    """
    if isinstance(node, PurePath):
        yield at, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from local_paths(getattr(node, name), (*at, name))
    elif isinstance(node, tuple | list):
        for index, item in enumerate(node):
            yield from local_paths(item, (*at, index))


def is_inside(path: PurePath, roots: tuple[Path, ...]) -> bool:
    """True if ``path``, as the file system resolves it now, lies in one of ``roots``.

    ``realpath`` (not strict) follows every symlink in the part of the path that exists
    and collapses ``..`` after each, then appends the part that does not exist yet: where
    a file or folder created at ``path`` would really be.
    """
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(root) for root in roots)


# --- limits ------------------------------------------------------------------------------


def _limit_problems(config: BackfillConfig, limits: ApiLimits) -> list[ConfigError]:
    asked: list[tuple[_KeyPath, float, float, str]] = [
        (
            ("processing", "requests_per_second"),
            config.processing.requests_per_second,
            limits.requests_per_second,
            "requests per second per host",
        ),
        (
            ("processing", "max_concurrent_pds"),
            config.processing.max_concurrent_pds,
            limits.max_concurrent_pds,
            "hosts at once",
        ),
        (
            ("network", "max_repo_bytes"),
            config.network.max_repo_bytes,
            limits.max_repo_bytes,
            "bytes per repo",
        ),
    ]
    return [
        ConfigError(
            f"is {_number(value)}, over this server's limit of {_number(limit)} {what}; "
            f"ask for at most {_number(limit)} (the server's operator sets the limit)",
            key=_key(at),
        )
        for at, value, limit, what in asked
        if value > limit
    ]


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


# --- network -----------------------------------------------------------------------------


def _network_problems(config: BackfillConfig, policy: ApiPolicy) -> list[ConfigError]:
    problems: list[ConfigError] = []
    if config.network.allow_private_addresses:
        problems.append(
            ConfigError(
                "is refused by this server: a config sent to the API cannot allow loopback "
                "or private addresses; remove it (the server's operator decides this)",
                key=_key(("network", "allow_private_addresses")),
            )
        )
    verdicts: dict[str, str | None] = {}  # host -> problem, so each host resolves once
    for at, url in _outbound_urls(config):
        host = (urlsplit(url).hostname or "").rstrip(".")
        if host not in verdicts:
            verdicts[host] = host_problem(host, policy.resolve)
        if (problem := verdicts[host]) is not None:
            problems.append(ConfigError(f"{problem}; {_FIX_ADDRESS}", key=_key(at)))
    return problems


def _outbound_urls(config: BackfillConfig) -> list[tuple[_KeyPath, str]]:
    """Every URL in the config that the job sends requests to, with its key path."""
    urls: list[tuple[_KeyPath, str | None]] = [
        (("identity", "plc_url"), config.identity.plc_url),
        (("monitoring", "alert_webhook_url"), config.monitoring.alert_webhook_url),
    ]
    source, storage = config.source, config.storage
    if isinstance(source, PdsSource):
        urls += [(("source", "hosts", i), host) for i, host in enumerate(source.hosts)]
    if isinstance(source, S3Source):
        urls.append((("source", "endpoint_url"), source.endpoint_url))
    if isinstance(storage, S3Storage | DynamoDbStorage):
        urls.append((("storage", "endpoint_url"), storage.endpoint_url))
    return [(at, url) for at, url in urls if url is not None]


def host_problem(host: str, resolve: Callable[[str], list[str]]) -> str | None:
    """What is wrong with sending requests to ``host`` (lowercase, no brackets), or None.

    Resolved addresses are not named in the message: that would let API clients map the
    server's internal DNS.
    """
    if not host:
        return "has no host"
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return "names this machine (localhost)"
    literal = _ip_literal(host)
    if literal is not None:
        if _is_public(literal):
            return None
        return "is a loopback, private, link-local, multicast or reserved address"
    addresses = _resolved(host, resolve)
    if not addresses:
        return "has a host name that does not resolve: check the spelling"
    if all(_is_public(address) for address in addresses):
        return None
    return "has a host name that resolves to a loopback, private, link-local or reserved address"


def _ip_literal(host: str) -> _IpAddress | None:
    """``host`` as an IP address, in any spelling the system would accept.

    ``inet_aton`` takes the legacy IPv4 forms (``127.1``, ``0x7f.0.0.1``, ``2130706433``)
    that ``ipaddress`` refuses but the resolver (and so the HTTP client) still honours.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # not an address; ValueError: NUL or non-ASCII
        return None


def _resolved(host: str, resolve: Callable[[str], list[str]]) -> list[_IpAddress | None]:
    """The addresses ``host`` resolves to; None for an answer that is not an address."""
    try:
        texts = resolve(host)
    except (OSError, UnicodeError):
        return []
    addresses: list[_IpAddress | None] = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            addresses.append(None)
    return addresses


def _is_public(address: _IpAddress | None) -> bool:
    return address is not None and is_public_ip(address)


def _key(at: _KeyPath) -> str:
    return format_key(("backfill", *at))
