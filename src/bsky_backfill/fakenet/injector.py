"""The fault hook the simulated network runs with: latency, bandwidth and injected faults.

:class:`FaultInjector` implements :class:`~bsky_backfill.fakenet.hooks.FaultHook`:
- per-host conditions: a fixed latency before every answer and a bandwidth cap on bodies;
- per-request faults from a :class:`~bsky_backfill.fakenet.faults.FaultPlan` (rates and
  schedules: transient, a retry may succeed);
- per-account faults that never go away (``account_faults``: a corrupt or forged repo);
- DID documents whose PDS endpoint is replaced (``endpoints``: e.g. private, loopback or
  link-local addresses, to test that a client refuses them — nothing is ever served
  there, and a test must never let a request reach one).
``injected`` counts what was done, by fault, for reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final

from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.fakenet.faults import (
    Fault,
    FaultPlan,
    FaultSpec,
    bad_signature,
    corrupt_tree_root,
    truncate_at_block,
)
from bsky_backfill.fakenet.http import Abort, Reply, RequestInfo, xrpc_error

__all__ = ["FaultInjector", "HostConditions"]

_GET_REPO: Final = "com.atproto.sync.getRepo"
_CHUNK: Final = 16 * 1024
_IMPOSTOR: Final = Keypair.from_seed("k256", "fakenet-impostor")


@dataclass(frozen=True, slots=True)
class HostConditions:
    """How a host's network behaves: seconds before each answer, body bytes per second."""

    latency_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None


class FaultInjector:
    """A fault hook; see the module docstring. Deterministic for its inputs."""

    def __init__(
        self,
        spec: FaultSpec | None = None,
        *,
        conditions: Mapping[int, HostConditions] | None = None,
        account_faults: Mapping[str, Fault] | None = None,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = FaultPlan(spec or FaultSpec())
        self.conditions = dict(conditions or {})
        self.account_faults = dict(account_faults or {})
        self.endpoints = dict(endpoints or {})
        self.injected: Counter[str] = Counter()
        self._requests: defaultdict[int, int] = defaultdict(int)
        self._rng = random.Random(self.plan.spec.seed)

    def failing_dids(self) -> set[str]:
        """DIDs no retry can fetch: a persistent corrupt or forged repo, or a PDS endpoint
        a client must refuse. Ground truth expects them ``failed``."""
        persistent = {"corrupt", "bad_signature"}
        bad = {did for did, fault in self.account_faults.items() if fault in persistent}
        return bad | set(self.endpoints)

    async def __call__(self, info: RequestInfo, reply: Reply) -> Reply:
        if info.host is None:
            return self._document(info, reply)
        host = info.host
        self._requests[host] += 1
        conditions = self.conditions.get(host)
        if conditions is not None and conditions.latency_s > 0:
            await asyncio.sleep(conditions.latency_s)
        is_get_repo = info.nsid == _GET_REPO and reply.status == 200
        fault = self.account_faults.get(info.did or "") if is_get_repo else None
        if fault is None:
            fault = self.plan.decide(host, self._requests[host], is_get_repo=is_get_repo)
        if fault is not None:
            self.injected[fault] += 1
            reply = self._apply(fault, info, reply)
        if conditions is not None and conditions.bandwidth_bytes_per_s:
            reply = dataclasses.replace(
                reply, body=_throttled(reply.body, conditions.bandwidth_bytes_per_s)
            )
        return reply

    def _apply(self, fault: Fault, info: RequestInfo, reply: Reply) -> Reply:
        if fault == "error_5xx":
            status = self.plan.status_for(info.host or 0, self._requests[info.host or 0])
            return xrpc_error(status, "InternalServerError", "injected failure")
        if fault == "reset":
            raise Abort
        if fault == "stall":
            return dataclasses.replace(reply, body=_Stalled(self.plan.spec.stall_seconds))
        assert isinstance(reply.body, bytes)  # CAR faults only hit a built getRepo answer
        if fault == "truncate":
            body = truncate_at_block(reply.body, self._rng.uniform(0.1, 0.9))
        elif fault == "corrupt":
            body = corrupt_tree_root(reply.body, self._rng)
        else:
            body = bad_signature(reply.body, _IMPOSTOR)
        return dataclasses.replace(reply, body=body)

    def _document(self, info: RequestInfo, reply: Reply) -> Reply:
        did = info.path.lstrip("/")
        endpoint = self.endpoints.get(did)
        if endpoint is None or reply.status != 200 or not isinstance(reply.body, bytes):
            return reply
        doc = json.loads(reply.body)
        for service in doc.get("service", []):
            service["serviceEndpoint"] = endpoint
        self.injected["endpoint"] += 1
        return dataclasses.replace(reply, body=json.dumps(doc).encode())


class _Stalled:
    """A body that sends nothing for ``seconds``, then drops the connection."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __aiter__(self) -> _Stalled:
        return self

    async def __anext__(self) -> bytes:
        await asyncio.sleep(self.seconds)
        raise Abort


async def _pieces(body: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), _CHUNK):
            yield body[start : start + _CHUNK]
        return
    async for chunk in body:
        yield chunk


async def _throttled(body: bytes | AsyncIterable[bytes], rate: float) -> AsyncIterator[bytes]:
    async for piece in _pieces(body):
        await asyncio.sleep(len(piece) / rate)
        yield piece
