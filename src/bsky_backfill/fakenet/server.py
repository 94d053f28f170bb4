"""The simulated network, served: a PLC directory and a fleet of PDS hosts on loopback.

:class:`FakeNetwork` runs in the caller's event loop: one aiohttp server per PDS host,
each on its own ``127.0.0.1`` port, and one for the PLC directory (which also serves the
control API, :mod:`~bsky_backfill.fakenet.control`). Every request takes one path:

    rate limiter (XRPC calls on a host) -> handler -> fault hook -> send -> request log

so rate-limit headers, faults and the log apply alike to every answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from bsky_backfill.fakenet.control import Controller, control_routes
from bsky_backfill.fakenet.hooks import FaultHook, NoFaults
from bsky_backfill.fakenet.http import Abort, Reply, RequestInfo, json_reply, send, xrpc_error
from bsky_backfill.fakenet.pds import PdsHost
from bsky_backfill.fakenet.plc import PlcDirectory
from bsky_backfill.fakenet.ratelimit import HostLimiter
from bsky_backfill.fakenet.repos import RepoStore
from bsky_backfill.fakenet.requestlog import LogEntry, RequestLog
from bsky_backfill.fakenet.spec import NetworkSpec
from bsky_backfill.fakenet.world import World

__all__ = ["FakeNetwork"]

logger = logging.getLogger(__name__)

_BIND: Final = "127.0.0.1"
# A stalled fault must not hold up shutdown for aiohttp's default minute.
_SHUTDOWN_TIMEOUT_S: Final = 1.0
_NOT_FOUND: Final = Reply(404, b"Not Found", content_type="text/plain; charset=utf-8")
_WELL_KNOWN_DID: Final = "/.well-known/did.json"


class FakeNetwork:
    """A running simulated network; use ``async with FakeNetwork(spec) as net``.

    After entering: ``plc_url``, ``host_urls`` (index = host number), ``world`` (the live
    model; mutate it only through the methods below or on the loop), ``log`` (every
    request) and ``faults`` (the hook, replaceable at any time). ``clock`` is the wall
    clock the rate limiters and the log use (epoch seconds).

    Not thread-safe: call it from its event loop only (see ``threaded.run_in_thread`` for
    synchronous callers). Exiting stops every server and the build threads.
    """

    def __init__(
        self,
        spec: NetworkSpec | None = None,
        *,
        faults: FaultHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec or NetworkSpec()
        self.faults: FaultHook = faults or NoFaults()
        self.log = RequestLog(self.spec.log_limit)
        self._clock = clock
        self._runners: list[web.BaseRunner] = []
        self._executor: ThreadPoolExecutor | None = None
        self._world: World | None = None
        self._control: Controller | None = None
        self._pds: list[PdsHost] = []
        self._limiters: list[HostLimiter] = []
        self._plc: PlcDirectory | None = None
        self.plc_url = ""
        self.host_urls: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> FakeNetwork:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind every server, then build the world (did:web names need the ports).

        Raises ``RuntimeError`` if already started; on any failure, what was started is
        stopped again.
        """
        if self._runners:
            raise RuntimeError("this FakeNetwork is already running")
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        population = self.spec.population
        self._executor = ThreadPoolExecutor(
            self.spec.build_threads, thread_name_prefix="fakenet-build"
        )
        ports = [await self._serve_host(h) for h in range(population.hosts)]
        self.host_urls = [f"http://{_BIND}:{port}" for port in ports]
        web_names = [f"{_BIND}%3A{port}" for port in ports]
        # World init is seconds of CPU for 100k+ accounts; nothing can reach it yet.
        self._world = await asyncio.to_thread(
            World, population, web_hosts=web_names, cache_bytes=self.spec.cache_bytes
        )
        self._plc = PlcDirectory(
            self._world, self.host_urls, web_names, self.spec.legacy_key_share, self._executor
        )
        repos = RepoStore(self._world, self._executor)
        self._pds = [PdsHost(h, self._world, repos, self._plc) for h in range(population.hosts)]
        self._limiters = [
            HostLimiter(self.spec.host(h), self._clock) for h in range(population.hosts)
        ]
        self._control = Controller(self._world, self.log)
        self.plc_url = f"http://{_BIND}:{await self._serve_plc()}"

    async def close(self) -> None:
        """Stop every server and the build threads; idempotent."""
        runners, self._runners = self._runners, []
        await asyncio.gather(*(runner.cleanup() for runner in runners))
        if self._executor is not None:
            # Builds still running finish in their threads; nobody waits for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _serve_host(self, host: int) -> int:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self._answer(request, host)

        server = web.Server(handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        return await self._bind(runner)

    async def _serve_plc(self) -> int:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._answer(request, None)

        assert self._control is not None
        app = web.Application()
        app.add_routes(control_routes(self._control, self.log))
        app.router.add_get("/{did:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        return await self._bind(runner)

    async def _bind(self, runner: web.BaseRunner) -> int:
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, _BIND, 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    # -- the request path ----------------------------------------------------------------

    async def _answer(self, request: web.BaseRequest, host: int | None) -> web.StreamResponse:
        arrived, wall = time.monotonic(), self._clock()
        info = RequestInfo.of(request, host)
        try:
            reply = await self._reply(info)
            reply = await self.faults(info, reply)
        except Abort:
            # The connection goes without an answer; aiohttp's write of the placeholder
            # response then fails quietly on the closed transport.
            if request.transport is not None:
                request.transport.abort()
            self._record(info, arrived, wall, 0, 0)
            return web.Response()
        response, sent = await send(request, reply)
        self._record(info, arrived, wall, reply.status, sent)
        return response

    async def _reply(self, info: RequestInfo) -> Reply:
        """The answer before faults: rate limits and the handler, or a 500 for a bug."""
        try:
            if info.host is None:
                assert self._plc is not None
                return await self._plc.resolve(info)
            if info.nsid is None or info.nsid == "_health":
                return await self._unlimited(info, info.host)
            headers, refusal = self._limiters[info.host].check(info.client, info.nsid)
            if refusal is not None:
                return refusal
            reply = await self._pds[info.host].handle(info)
            return dataclasses.replace(reply, headers={**reply.headers, **headers})
        except Exception:
            logger.exception("fakenet handler failed", extra={"path": info.path})
            return xrpc_error(500, "InternalServerError", "Internal Server Error")

    async def _unlimited(self, info: RequestInfo, host: int) -> Reply:
        """A host's paths outside the XRPC rate limits (as on the PDS, plain routes)."""
        if info.path == _WELL_KNOWN_DID:
            assert self._plc is not None
            return await self._plc.web_document(host)
        if info.nsid == "_health":
            return json_reply({"version": "fakenet"})
        return _NOT_FOUND

    def _record(
        self, info: RequestInfo, arrived: float, wall: float, status: int, sent: int
    ) -> None:
        did = info.did if info.host is not None else info.path.lstrip("/") or None
        endpoint = info.nsid or info.path
        self.log.append(
            LogEntry(arrived, wall, info.host, info.client, endpoint, did, status, sent)
        )

    # -- what callers use ----------------------------------------------------------------

    @property
    def world(self) -> World:
        """The live world; ``RuntimeError`` before :meth:`start`."""
        if self._world is None:
            raise RuntimeError("the FakeNetwork is not running")
        return self._world

    def host_of(self, url: str) -> int:
        """The host number of a host URL (as a DID document names it); ``KeyError`` if
        the URL is not one of this network's hosts."""
        normalised = url.rstrip("/").lower()
        for index, host_url in enumerate(self.host_urls):
            if host_url == normalised:
                return index
        raise KeyError(f"{url} is not a host of this network")

    def put_record(self, did: str, collection: str, rkey: str, value: dict[str, Any]) -> str:
        """Create or replace a record (links as ``cbrrr.CID``); returns the new rev.
        Raises ``ControlError`` (404 unknown DID, 400 bad collection / rkey)."""
        return self._controller.put_record(did, collection, rkey, value)

    def delete_record(self, did: str, collection: str, rkey: str) -> str:
        """Delete a record; returns the new rev. ``ControlError`` (404) if absent."""
        return self._controller.delete_record(did, collection, rkey)

    def set_status(self, did: str, status: str) -> None:
        """Set an account's status (``active``, ``deactivated``, ``takendown``,
        ``suspended``, ``deleted``, ``tombstoned``)."""
        self._controller.set_status(did, status)

    def move(self, did: str, host: int) -> None:
        """Migrate an account to ``host``: the DID document follows; the old host answers
        RepoNotFound."""
        self._controller.move(did, host)

    @property
    def _controller(self) -> Controller:
        if self._control is None:
            raise RuntimeError("the FakeNetwork is not running")
        return self._control
