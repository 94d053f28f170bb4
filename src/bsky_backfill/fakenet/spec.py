"""What a simulated network looks like: its population and how each PDS host behaves.

Two frozen option objects with working defaults, the only knobs of :class:`FakeNetwork`.
Defaults follow the reference PDS on Bluesky's hosts (``PROTOCOL.md``): 3000 XRPC calls per
5 minutes per client IP, plus getRepo's own bucket of 6000 per 5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bsky_backfill.fakenet.population import PopulationSpec

__all__ = ["HostSpec", "NetworkSpec"]


@dataclass(frozen=True, slots=True)
class HostSpec:
    """How one PDS host limits and labels traffic, per client IP.

    ``global_limit`` calls per ``global_window_s`` seconds count every XRPC call.
    ``getrepo_limit`` per ``getrepo_window_s`` is getRepo's own bucket (PDS 0.5.x);
    ``None`` models an older PDS, where getRepo counts in the global bucket only.
    ``getrepo_in_global``: getRepo also counts in the global bucket. The reference
    xrpc-server adds the global limiter to any route limiter; ``PROTOCOL.md`` reads the
    hosted PDS as giving getRepo its bucket alone, so that is the default (False).
    ``retry_after``: a 429 carries ``Retry-After`` (newer PDS versions).
    ``headers``: answers carry ``RateLimit-*`` headers.
    ``advertise_factor``: headers claim ``limit * factor`` (and the matching remaining
    count) while the real limit is enforced; above 1 this is a "lying" host.
    """

    global_limit: int = 3000
    global_window_s: float = 300.0
    getrepo_limit: int | None = 6000
    getrepo_window_s: float = 300.0
    getrepo_in_global: bool = False
    retry_after: bool = True
    headers: bool = True
    advertise_factor: float = 1.0

    def __post_init__(self) -> None:
        limits = (self.global_limit, self.getrepo_limit or 1)
        windows = (self.global_window_s, self.getrepo_window_s)
        if min(limits) < 1 or min(windows) <= 0 or self.advertise_factor <= 0:
            raise ValueError("HostSpec limits must be >= 1, windows and advertise_factor > 0")

    def scaled(self, factor: float) -> HostSpec:
        """The same host with every limit multiplied by ``factor`` (at least 1 call)."""
        if factor <= 0:
            raise ValueError("a rate-limit scale must be positive")
        getrepo = self.getrepo_limit
        return replace(
            self,
            global_limit=max(1, round(self.global_limit * factor)),
            getrepo_limit=None if getrepo is None else max(1, round(getrepo * factor)),
        )


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A whole simulated network: who lives on it and how its hosts behave.

    ``hosts``: one :class:`HostSpec` for every host, or a tuple with one per host
    (``population.hosts`` of them). ``legacy_key_share``: the share of DID documents that
    publish the signing key in the legacy form (``EcdsaSecp256k1VerificationKey2019`` /
    ``...r1...`` with the bare uncompressed point) instead of a Multikey.
    ``log_limit``: requests kept in the request log (oldest dropped first; None keeps all).
    ``build_threads``: worker threads building repo exports, so one big repo does not
    stall every other host. ``cache_bytes``: the world's export cache budget.
    """

    population: PopulationSpec = field(default_factory=PopulationSpec)
    hosts: HostSpec | tuple[HostSpec, ...] = HostSpec()
    legacy_key_share: float = 0.1
    log_limit: int | None = 200_000
    build_threads: int = 2
    cache_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if isinstance(self.hosts, tuple) and len(self.hosts) != self.population.hosts:
            raise ValueError(
                f"{len(self.hosts)} HostSpecs for {self.population.hosts} hosts: give one per host"
            )
        if not 0 <= self.legacy_key_share <= 1 or self.build_threads < 1:
            raise ValueError("legacy_key_share must be in [0, 1] and build_threads >= 1")
        if self.log_limit is not None and self.log_limit < 1:
            raise ValueError("log_limit must be positive or None")

    def host(self, index: int) -> HostSpec:
        """The behaviour of host ``index``."""
        if not 0 <= index < self.population.hosts:
            raise IndexError(f"host {index} is outside 0..{self.population.hosts - 1}")
        return self.hosts[index] if isinstance(self.hosts, tuple) else self.hosts
