"""A Slack-style webhook receiver on loopback, in the test's event loop: it keeps every
message posted to it and answers with the statuses it is given (then 200)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

__all__ = ["Webhook", "webhook_receiver"]

PATH = "/services/T0/B0/s3cretpath"


class Webhook:
    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.messages: list[dict[str, object]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.messages.append(await request.json())
        return web.Response(status=self.answers.pop(0) if self.answers else 200)


@asynccontextmanager
async def webhook_receiver(answers: list[int] | None = None) -> AsyncIterator[Webhook]:
    """The receiver, listening; its ``url`` has a secret-looking path (``s3cretpath``)."""
    hook = Webhook(list(answers or []))
    app = web.Application()
    app.router.add_post(PATH, hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}{PATH}"
    try:
        yield hook
    finally:
        await runner.cleanup()
