"""``bsky-backfill dispatch`` end to end: a dataset made by a real job against the
simulated network, a webhook receiver on loopback that fails sometimes (every 3rd POST
answers 503, one POST times out after it was processed), and the real Redis.

The receiver dedupes by uri + cid, as the README asks receivers to, and counts what it
saw twice: only a batch whose acknowledgement was lost (the timeout, a kill -9) may be.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.support.jobs import CLI, dids_of, fakenet, job_yaml, run_cli
from tests.support.redis import REDIS_URL, fresh_prefix, require_redis
from tests.support.server import create_key, running_server
from tests.unit.dispatch.conftest import serving

COLLECTIONS = ("app.bsky.feed.like", "app.bsky.feed.post")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real job's Parquet dataset, made once for the module."""
    root = tmp_path_factory.mktemp("backfill")
    with fakenet() as network:
        (root / "dids.txt").write_text("\n".join(dids_of(network)) + "\n")
        (root / "job.yaml").write_text(job_yaml(network["plc"], rate=200, out="./dataset"))
        assert run_cli(root / "job.yaml") == 0
    return root / "dataset"


def expected(dataset: Path, proportion: float, seed: int) -> set[tuple[str, str]]:
    """The (uri, cid) of every record the selection should send, computed here."""
    table = ds.dataset(dataset / "records", partitioning="hive").to_table(
        columns=["uri", "cid"], filter=ds.field("collection").isin(list(COLLECTIONS))
    )
    keys = zip(table.column("uri").to_pylist(), table.column("cid").to_pylist(), strict=True)
    return {
        (uri, cid)
        for uri, cid in keys
        if int.from_bytes(hashlib.sha256(f"{seed}\0{uri}".encode()).digest()[:8], "big")
        < proportion * 2**64
    }


@dataclass
class Receiver:
    """Dedupes by uri + cid; every 3rd POST answers 503 unprocessed; POST ``stall`` is
    processed, then answered too late; each POST waits ``delay`` first. ``enough`` is
    set once ``enough_at`` batches were processed."""

    stall: int | None = None
    delay: float = 0.0
    enough_at: int | None = None
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    posts: int = 0
    batches: int = 0
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    url: str = ""

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.seen.values())

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        body: dict[str, Any] = await request.json()
        await asyncio.sleep(self.delay)
        if self.posts % 3 == 0:
            return web.Response(status=503)
        self.seen.update((item["uri"], item["cid"]) for item in body["items"])
        self.batches += 1
        if self.batches == self.enough_at:
            self.enough.set()
        if self.posts == self.stall:
            await asyncio.sleep(0.8)  # past the sender's timeout: it sends the batch again
        return web.Response(status=200)


@asynccontextmanager
async def receiving(hook: Receiver) -> AsyncIterator[Receiver]:
    async with serving(hook.handle) as hook.url:
        yield hook


def dispatch_yaml(dataset: Path, hook: str, stream: str | None, *, name: str, seed: int) -> str:
    redis = (
        f"    - {{name: queue, type: redis, url: '{REDIS_URL}', stream: {stream}}}\n"
        if stream
        else ""
    )
    return (
        "dispatch:\n"
        f"  name: {name}\n"
        f"  dataset: {dataset}\n"
        f"  select: {{collections: [{', '.join(COLLECTIONS)}],\n"
        f"           sample: {{proportion: 0.5, seed: {seed}}}}}\n"
        "  batch_size: 20\n"
        "  network: {allow_private_addresses: true}\n"
        "  monitoring: {prometheus_port: 0}\n"
        "  integrations:\n"
        f"    - {{name: classifier, type: webhook, url: '{hook}', timeout_seconds: 0.5,"
        " backoff_seconds: 0.01, max_retries: 5}\n"
        f"{redis}"
    )


async def dispatch(
    config: Path, *, kill_when: Receiver | None = None, batches: int = 0
) -> int | None:
    """Run ``bsky-backfill dispatch`` as a child; SIGKILL it once ``kill_when`` has taken
    ``batches`` batches. Its exit code, or None when killed."""
    child = await asyncio.create_subprocess_exec(
        *CLI,
        "dispatch",
        str(config),
        cwd=config.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if kill_when is not None:
        ended = asyncio.ensure_future(child.wait())
        killing = asyncio.ensure_future(kill_when.wait())
        await asyncio.wait([ended, killing], return_when=asyncio.FIRST_COMPLETED)
        killing.cancel()
        if not ended.done():
            child.send_signal(signal.SIGKILL)
            await ended
            return None
    out, err = await child.communicate()
    if child.returncode != 0:
        sys.stderr.write(out.decode() + err.decode())
    return child.returncode


async def test_every_record_reaches_both_integrations_exactly(
    dataset: Path, tmp_path: Path
) -> None:
    require_redis()
    stream = fresh_prefix()
    want = expected(dataset, 0.5, seed=11)
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with receiving(Receiver(stall=5)) as hook:
            config = tmp_path / "dispatch.yaml"
            config.write_text(dispatch_yaml(dataset, hook.url, stream, name="both", seed=11))
            assert await dispatch(config) == 0
            assert set(hook.seen) == want
            assert hook.duplicates == 20  # the batch whose answer timed out, sent again
            entries = await redis.xrange(stream)
            assert Counter((f["uri"], f["cid"]) for _, f in entries) == Counter(want)

            posts = hook.posts
            assert await dispatch(config) == 0  # nothing new: nothing sent
            assert hook.posts == posts
            assert await redis.xlen(stream) == len(want)
    finally:
        await redis.delete(stream)
        await redis.aclose()


async def test_a_killed_run_resumes_and_resends_at_most_one_batch(
    dataset: Path, tmp_path: Path
) -> None:
    want = expected(dataset, 0.5, seed=23)
    async with receiving(Receiver(delay=0.02, enough_at=8)) as hook:
        config = tmp_path / "dispatch.yaml"
        config.write_text(dispatch_yaml(dataset, hook.url, None, name="killed", seed=23))
        assert await dispatch(config, kill_when=hook.enough) is None
        assert 0 < len(hook.seen) < len(want)
        assert await dispatch(config) == 0
    assert set(hook.seen) == want
    assert hook.duplicates <= 20


async def test_the_api_starts_a_dispatch_in_the_background(dataset: Path, tmp_path: Path) -> None:
    want = expected(dataset, 0.5, seed=5)
    async with receiving(Receiver()) as hook:
        with running_server(tmp_path, "--allow-private-addresses") as server:
            shutil.copytree(dataset, server.root / "dataset")
            token = await asyncio.to_thread(create_key, server.home, "write")
            client = server.client(token)
            config = dispatch_yaml(server.root / "dataset", hook.url, None, name="api", seed=5)
            outside = config.replace(str(server.root / "dataset"), str(dataset))
            post = functools.partial(client.post, "/api/backfill/dispatch")
            refused = await asyncio.to_thread(post, json={"config_yaml": outside})
            assert refused.status_code == 422
            assert refused.json()["detail"][0]["loc"] == ["body", "dispatch", "dataset"]
            accepted = await asyncio.to_thread(post, json={"config_yaml": config})
            assert (accepted.status_code, accepted.json()) == (202, {"dispatch": "api"})
            for _ in range(300):
                if set(hook.seen) == want:
                    break
                await asyncio.sleep(0.05)
    assert set(hook.seen) == want
    assert hook.duplicates == 0
