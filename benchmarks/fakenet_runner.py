"""A simulated network for benchmarks, in its own process, with per-host limits and latency.

Usage: python -m benchmarks.fakenet_runner SPEC.json

Like ``bsky-backfill fakenet``, but the spec file gives each host its own
:class:`~bsky_backfill.fakenet.spec.HostSpec` and network conditions (the CLI has one
scale for every host and no latency):

    {"seed": 1, "accounts": 2000, "hosts": 10, "max_records": 20, "size_scale": 4,
     "host_specs": [{"global_limit": 50, "global_window_s": 10, ...}, ...],
     "latency_s": {"3": 0.5}, "dids_out": "/tmp/dids.tsv", "warm": true,
     "population": {"huge": [3000000], "web_share": 0}, "cache_bytes": 4294967296}

``population`` (optional) sets any other :class:`PopulationSpec` field; ``cache_bytes``
the world's export cache (default 2 GiB).

It writes every account (``did<TAB>host<TAB>status``) to ``dids_out``, builds every
repo export ahead when ``warm`` (so the benchmark measures the engine, not repo
building), then prints one JSON line ``{"plc": URL, "hosts": [URL, ...]}`` and serves
until SIGTERM. The request log (kept whole) is at ``{plc}/_fakenet/log``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bsky_backfill.fakenet.injector import FaultInjector, HostConditions
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.server import FakeNetwork
from bsky_backfill.fakenet.spec import HostSpec, NetworkSpec


def network_spec(spec: dict[str, Any]) -> NetworkSpec:
    extra = dict(spec.get("population", {}))
    if "huge" in extra:
        extra["huge"] = tuple(extra["huge"])  # JSON has lists; the spec is frozen
    population = PopulationSpec(
        seed=spec["seed"],
        accounts=spec["accounts"],
        hosts=spec["hosts"],
        max_records=spec.get("max_records", 20),
        size_scale=spec.get("size_scale", 4.0),
        **extra,
    )
    hosts = tuple(HostSpec(**host) for host in spec["host_specs"])
    cache = spec.get("cache_bytes", 2 * 1024**3)
    return NetworkSpec(population, hosts=hosts, log_limit=None, cache_bytes=cache)


async def serve(spec: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    conditions = {
        int(host): HostConditions(latency_s=float(seconds))
        for host, seconds in spec.get("latency_s", {}).items()
    }
    async with FakeNetwork(network_spec(spec), faults=FaultInjector(conditions=conditions)) as net:
        world = net.world
        lines = [f"{a.did}\t{a.host}\t{a.status}" for a in world]
        await asyncio.to_thread(Path(spec["dids_out"]).write_text, "\n".join(lines) + "\n")
        if spec.get("warm", True):
            for account in world:  # build (and cache) every export before the clock starts
                world.export(account)
        sys.stdout.write(json.dumps({"plc": net.plc_url, "hosts": net.host_urls}) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m benchmarks.fakenet_runner SPEC.json")
    asyncio.run(serve(json.loads(Path(args[0]).read_text())))


if __name__ == "__main__":
    main()
