"""A :class:`FakeNetwork` on its own thread and event loop, for synchronous callers.

The servers answer from that thread; the caller reads the URLs directly and touches the
world or the log only through :meth:`NetworkThread.call`, which runs a function on the
network's loop (the world is not thread-safe). For benchmarks prefer a separate process
(``bsky-backfill fakenet``): a thread shares the caller's GIL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

from bsky_backfill.fakenet.hooks import FaultHook
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import NetworkSpec

__all__ = ["NetworkThread", "run_in_thread"]

T = TypeVar("T")
_START_TIMEOUT_S: Final = 120.0


class NetworkThread:
    """Handle on a network running in another thread: its URLs and a way to reach it."""

    def __init__(
        self, network: FakeNetwork, loop: asyncio.AbstractEventLoop, stop: asyncio.Event
    ) -> None:
        self._network = network
        self._loop = loop
        self._stop = stop
        self.plc_url = network.plc_url
        self.host_urls = list(network.host_urls)

    def host_of(self, url: str) -> int:
        """The host number of a host URL; ``KeyError`` if unknown."""
        return self._network.host_of(url)

    def call(self, func: Callable[[FakeNetwork], T], timeout: float = 60.0) -> T:
        """Run ``func(network)`` on the network's loop and return (or raise) its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(func(self._network))
            except BaseException as error:  # handed to the caller's thread, raised there
                done.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def stop(self) -> None:
        """Ask the network to shut down (returns at once; the context manager waits)."""
        self._loop.call_soon_threadsafe(self._stop.set)


@contextmanager
def run_in_thread(
    spec: NetworkSpec | None = None, *, faults: FaultHook | None = None
) -> Iterator[NetworkThread]:
    """Start a network in a new thread; yield its handle once it serves; stop it on exit.

    Raises whatever starting the network raised (in this thread).
    """
    ready: concurrent.futures.Future[NetworkThread] = concurrent.futures.Future()

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            network = FakeNetwork(spec, faults=faults)
            await network.start()
        except BaseException as error:
            ready.set_exception(error)
            return
        try:
            ready.set_result(NetworkThread(network, asyncio.get_running_loop(), stop))
            await stop.wait()
        finally:
            await network.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="fakenet", daemon=True)
    thread.start()
    handle = ready.result(_START_TIMEOUT_S)
    try:
        yield handle
    finally:
        handle.stop()
        thread.join()
