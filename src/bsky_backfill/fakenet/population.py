"""Who lives on the simulated network: accounts derived from a seed, one at a time.

Account ``i`` of a population is a pure function of ``(seed, i)``: its DID (did:plc, or
did:web for a share), handle, host, key curve, status and record count (heavy-tailed:
most small, a few 10k+, plus any configured huge ones). Nothing is generated until asked
for, so 100k+ accounts cost a DID string each until their repos are requested.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final, Literal

import libipld

from bsky_backfill.atproto.crypto import Curve, Keypair
from bsky_backfill.atproto.syntax import micros_to_tid
from bsky_backfill.fakenet.records import RecordMix, generate_records

__all__ = ["AccountSeed", "PopulationSpec", "Status", "account_seed"]

Status = Literal["active", "deactivated", "takendown", "suspended", "deleted", "tombstoned"]
"""``deleted``: the PDS says RepoNotFound; ``tombstoned``: the PLC directory answers 410."""

# The moment every generated repo was last written: revs are TIDs just after it.
_REV_BASE_MICROS: Final = 1_762_000_000_000_000


@dataclass(frozen=True, slots=True)
class PopulationSpec:
    """The shape of a simulated population; every field has a working default.

    ``size_scale`` and ``size_alpha`` shape the Pareto-distributed record counts (capped at
    ``max_records``); ``huge`` adds accounts (the last ones) with exactly these counts.
    Status shares are fractions of accounts; the rest are active.
    """

    seed: int = 0
    accounts: int = 200
    hosts: int = 4
    web_share: float = 0.02
    p256_share: float = 0.15
    size_scale: float = 15.0
    size_alpha: float = 1.2
    max_records: int = 20_000
    huge: tuple[int, ...] = ()
    deactivated: float = 0.01
    takendown: float = 0.005
    suspended: float = 0.005
    deleted: float = 0.005
    tombstoned: float = 0.003
    mix: RecordMix = field(default_factory=RecordMix)

    def __post_init__(self) -> None:
        if self.accounts < 0 or self.hosts < 1:
            raise ValueError("a population needs accounts >= 0 and hosts >= 1")

    @property
    def total_accounts(self) -> int:
        return self.accounts + len(self.huge)


@dataclass(frozen=True)
class AccountSeed:
    """One generated account: who it is and what its repo holds at the start."""

    spec: PopulationSpec = field(repr=False)
    index: int
    did: str
    handle: str
    host: int
    curve: Curve
    status: Status
    record_count: int

    @cached_property
    def keypair(self) -> Keypair:
        return Keypair.from_seed(self.curve, f"fakenet-{self.spec.seed}-{self.index}")

    @property
    def rev(self) -> str:
        """The generated repo's rev: a TID unique to the account."""
        return micros_to_tid(_REV_BASE_MICROS + self.index)

    def records(self) -> dict[str, dict[str, object]]:
        """The generated records, keyed ``collection/rkey`` (built anew on each call)."""
        rng = random.Random(f"records-{self.spec.seed}-{self.index}")
        return generate_records(self.record_count, rng, self.spec.mix)


def _did(spec: PopulationSpec, index: int, web_host: str | None) -> str:
    if web_host is not None:
        return f"did:web:{web_host}"
    digest = hashlib.sha256(f"plc-{spec.seed}-{index}".encode()).digest()
    # base32 lowercase, like a real did:plc (libipld: base64.b32encode is slow on 3.11)
    return "did:plc:" + libipld.encode_multibase("b", digest)[1:25]


def _status(spec: PopulationSpec, roll: float) -> Status:
    for status, share in (
        ("deactivated", spec.deactivated),
        ("takendown", spec.takendown),
        ("suspended", spec.suspended),
        ("deleted", spec.deleted),
        ("tombstoned", spec.tombstoned),
    ):
        if roll < share:
            return status  # type: ignore[return-value]
        roll -= share
    return "active"


@functools.cache
def _host_cumulative_weights(hosts: int) -> list[float]:
    # A few big hosts and a long tail, like the real network: host h has weight 1/(h+1).
    return list(itertools.accumulate(1 / (h + 1) for h in range(hosts)))


def _uniforms(spec: PopulationSpec, index: int) -> list[float]:
    """Five independent uniforms in [0, 1) for account ``index``: one sha256, no RNG
    seeding (seeding a Mersenne Twister per account costs more than everything else)."""
    digest = hashlib.sha256(f"account-{spec.seed}-{index}".encode()).digest()
    return [int.from_bytes(digest[i : i + 6], "big") / 2**48 for i in range(0, 30, 6)]


def account_seed(
    spec: PopulationSpec, index: int, web_hosts: list[str] | None = None
) -> AccountSeed:
    """Account ``index`` of the population (0 <= index < ``spec.total_accounts``).

    ``web_hosts``: each host's ``host%3Aport`` did:web name. A host serves one did:web
    document, so only account ``i < hosts`` may be did:web, on host ``i``, with chance
    ``web_share``; without ``web_hosts`` every account is did:plc.
    """
    if not 0 <= index < spec.total_accounts:
        raise IndexError(f"account {index} is outside 0..{spec.total_accounts - 1}")
    host_u, web_u, size_u, status_u, curve_u = _uniforms(spec, index)
    cumulative = _host_cumulative_weights(spec.hosts)
    host = min(bisect.bisect(cumulative, host_u * cumulative[-1]), spec.hosts - 1)
    web_host = None
    if web_hosts and index < spec.hosts and web_u < spec.web_share:
        host, web_host = index, web_hosts[index]
    if index >= spec.accounts:
        count = spec.huge[index - spec.accounts]
        status: Status = "active"
    else:
        # Pareto: most accounts hold a few dozen records, a few hold tens of thousands.
        pareto = (1.0 - size_u) ** (-1.0 / spec.size_alpha)
        count = min(int(spec.size_scale * (pareto - 1)), spec.max_records)
        status = _status(spec, status_u)
    curve: Curve = "p256" if curve_u < spec.p256_share else "k256"
    did = _did(spec, index, web_host)
    return AccountSeed(spec, index, did, f"user{index}.host{host}.test", host, curve, status, count)
