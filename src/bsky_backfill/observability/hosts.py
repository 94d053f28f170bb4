"""Bounded host labels: a job can touch thousands of PDS hosts, a metric cannot have a
series per host. The busiest ``limit`` hosts get their own label, every other host is
counted under ``other``.

"Busiest" is decided as early as it can be: by the DIDs each host serves once the job
is planned (:meth:`HostLabels.rank`), and first come, first labelled before that. A
label once given is kept (a counter series that moved to ``other`` mid-job would look
like a reset to Prometheus), so at most ``limit`` hosts are ever named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["OTHER", "HostLabels"]

OTHER: Final = "other"
"""The label of every host past the busiest ``limit``."""


class HostLabels:
    """Host -> metric label, with at most ``limit`` hosts named."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the host label limit must be 0 or more")
        self.limit = limit
        self._named: set[str] = set()
        self._ranked: frozenset[str] | None = None

    def rank(self, dids_per_host: Mapping[str, int]) -> None:
        """Name the hosts with the most DIDs (ties: by name), within what is left of the
        limit; hosts outside them are ``other`` from now on."""
        busiest = sorted(dids_per_host, key=lambda host: (-dids_per_host[host], host))
        room = self.limit - len(self._named)
        chosen = [host for host in busiest if host not in self._named][: max(room, 0)]
        self._named.update(chosen)
        self._ranked = frozenset(self._named)

    def label(self, host: str | None) -> str:
        """``host``'s label: itself when it is (or now becomes) one of the named."""
        if host is None:
            return OTHER
        if host in self._named:
            return host
        if self._ranked is None and len(self._named) < self.limit:
            self._named.add(host)
            return host
        return OTHER
