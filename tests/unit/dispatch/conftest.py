"""A small dataset in the real Parquet layout (written with the sink's own table code),
and a loopback HTTP receiver the webhook tests answer from."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bsky_backfill.core.models import RecordRow
from bsky_backfill.sinks.parquet import records_table, write_parquet
from bsky_backfill.sinks.rows import group_by_collection

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"


def record(i: int, collection: str = POST, *, day: int | None = None) -> RecordRow:
    """Record ``i`` of a made-up account, written on day ``day`` (default ``i``) of 2025."""
    did = f"did:plc:{i % 7:024d}"
    rkey = f"3k{i:011d}"
    created = T0 + timedelta(days=i if day is None else day)
    return RecordRow(
        did=did,
        collection=collection,
        rkey=rkey,
        uri=f"at://{did}/{collection}/{rkey}",
        cid=f"bafyrei{i:052d}",
        created_at=created,
        record=json.dumps({"$type": collection, "text": f"post {i}", "createdAt": "x"}),
        rev="rev",
        commit_cid="commit",
        pds="https://pds.example",
        job_id="job",
        fetched_at=T0,
    )


def write_dataset(root: Path, rows: Sequence[RecordRow], part: int = 1) -> Path:
    """``rows`` as ``root/records/collection=<nsid>/part-<part>.parquet``; returns root."""
    for collection, group in group_by_collection(rows).items():
        folder = root / "records" / f"collection={collection}"
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet(records_table(group), folder / f"part-{part:010d}.parquet", "records")
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """40 posts (days 0-39 of 2025) and 10 likes."""
    rows = [record(i) for i in range(40)] + [record(100 + i, LIKE) for i in range(10)]
    return write_dataset(tmp_path / "dataset", rows)


Answer = Callable[[], Awaitable[web.StreamResponse]]


def status(code: int, headers: dict[str, str] | None = None, body: str = "") -> Answer:
    """An answer: ``code`` with ``headers`` and ``body``."""

    async def answer() -> web.StreamResponse:
        return web.Response(status=code, headers=headers, text=body)

    return answer


def slow(seconds: float) -> Answer:
    """An answer: 200, after ``seconds``."""

    async def answer() -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=200)

    return answer


@dataclass
class Receiver:
    """Answers POSTs with ``answers`` in turn (then 200), keeping every body."""

    answers: list[Answer] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        return await (self.answers.pop(0) if self.answers else status(200))()


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """``handler`` answering POSTs to ``/hook`` on loopback; yields the URL."""
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    async with serving(hook.handle) as hook.url:
        yield hook
