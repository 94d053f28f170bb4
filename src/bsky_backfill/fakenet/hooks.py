"""The fault hook: one object every fakenet request passes through before it is answered.

The server builds the normal :class:`~bsky_backfill.fakenet.http.Reply` (rate-limited or
not), then awaits ``hook(info, reply)`` and writes what it returns. A hook can

- delay: ``await asyncio.sleep(d)`` and return ``reply``;
- fail: return another reply (a 5xx, a wrong error name);
- reset the connection: raise :class:`~bsky_backfill.fakenet.http.Abort`;
- stall or throttle: return a reply whose body is an async iterable that sleeps between
  chunks (or forever), and may raise ``Abort`` part-way;
- replace the body: ``dataclasses.replace(reply, body=...)`` (a cut or corrupted CAR,
  e.g. from :mod:`bsky_backfill.fakenet.faults`).

Requests to the PLC directory pass through it too (``info.host is None``), so DID
documents can be faulted the same way. The default hook changes nothing.
"""

from __future__ import annotations

from typing import Protocol

from bsky_backfill.fakenet.http import Reply, RequestInfo

__all__ = ["FaultHook", "NoFaults"]


class FaultHook(Protocol):
    """Decides what becomes of one answer. Called on the server's event loop, once per
    request (XRPC, DID document or any other path); must not block the loop."""

    async def __call__(self, info: RequestInfo, reply: Reply) -> Reply:
        """The reply to send instead of ``reply`` (or ``reply`` itself); may raise ``Abort``."""
        ...


class NoFaults:
    """The default hook: every reply goes out as built."""

    async def __call__(self, info: RequestInfo, reply: Reply) -> Reply:
        return reply
