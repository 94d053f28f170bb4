"""Every request the simulated network answered, so tests can prove what a client did
(rate-limit compliance, retries, which host saw which DID)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LogEntry", "RequestLog"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One answered request.

    ``monotonic``: ``time.monotonic()`` when the request arrived (for rates and gaps);
    ``wall``: epoch seconds from the network's clock. ``host``: the PDS host index, None
    for the PLC directory. ``endpoint``: the XRPC method, else the path. ``did``: the
    ``did`` / ``repo`` parameter (or the DID a PLC lookup asked for). ``status``: 0 when
    the connection was dropped unanswered. ``sent``: body bytes written (less than the
    whole body when a fault cut it or the client hung up).
    """

    monotonic: float
    wall: float
    host: int | None
    client: str
    endpoint: str
    did: str | None
    status: int
    sent: int

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON values."""
        return asdict(self)


class RequestLog:
    """An append-only, optionally bounded log (the oldest entries go first past ``limit``).

    An entry is appended when its answer is finished (or dropped), so a slow answer lands
    after quicker later ones; ``monotonic`` keeps the arrival order. Not thread-safe:
    appended and read on the server's event loop.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=limit)
        self.dropped = 0
        """Entries pushed out by the bound since the last :meth:`clear`."""

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self._entries)

    def append(self, entry: LogEntry) -> None:
        if self._entries.maxlen is not None and len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(entry)

    def entries(
        self,
        *,
        host: int | None = None,
        plc: bool = False,
        client: str | None = None,
        endpoint: str | None = None,
        did: str | None = None,
        status: int | None = None,
    ) -> list[LogEntry]:
        """Entries matching every filter given, oldest first. ``plc=True`` selects the PLC
        directory's entries (``host`` then must be None)."""
        if plc and host is not None:
            raise ValueError("an entry is either a host's or the PLC directory's")
        return [
            e
            for e in self._entries
            if (host is None or e.host == host)
            and (not plc or e.host is None)
            and (client is None or e.client == client)
            and (endpoint is None or e.endpoint == endpoint)
            and (did is None or e.did == did)
            and (status is None or e.status == status)
        ]

    def clear(self) -> int:
        """Forget every entry; return how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self.dropped = 0
        return count
