"""The request and reply of every fakenet site, and the one function that writes a reply.

Handlers never write to the socket: they return a :class:`Reply` (status, headers, body),
so that the fault hook can delay, replace or break it before :func:`send` writes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

__all__ = [
    "CAR_TYPE",
    "JSON_TYPE",
    "Abort",
    "Reply",
    "RequestInfo",
    "json_reply",
    "send",
    "xrpc_error",
]

JSON_TYPE: Final = "application/json; charset=utf-8"
CAR_TYPE: Final = "application/vnd.ipld.car"
_CHUNK_BYTES: Final = 64 * 1024


class Abort(Exception):
    """Raised by a fault hook, or by a reply body while it streams, to drop the connection
    without finishing the answer: the client sees a reset or a cut body."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One request as the handlers, the fault hook and the log see it.

    ``host``: the PDS host's index, or None for the PLC directory. ``method``: the HTTP
    method. ``nsid``: the XRPC method for ``/xrpc/<nsid>`` paths, else None. ``params``:
    the query, first value of each key. ``did``: the ``did`` (or ``repo``) parameter, if
    any. ``client``: the peer IP.
    """

    host: int | None
    method: str
    path: str
    nsid: str | None
    params: Mapping[str, str]
    client: str

    @property
    def did(self) -> str | None:
        return self.params.get("did") or self.params.get("repo")

    @classmethod
    def of(cls, request: web.BaseRequest, host: int | None) -> RequestInfo:
        path = request.path
        nsid = path[len("/xrpc/") :] if path.startswith("/xrpc/") else None
        params = {key: request.query[key] for key in request.query}
        return cls(host, request.method, path, nsid or None, params, request.remote or "")


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer not yet written.

    ``body``: bytes, or an async iterable of chunks (a fault's slow or broken body; it
    may raise :class:`Abort`). ``chunked``: stream without Content-Length, as the real PDS
    sends CARs; an iterable body is always chunked.
    """

    status: int
    body: bytes | AsyncIterable[bytes] = b""
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)
    chunked: bool = False


def json_reply(data: object, status: int = 200) -> Reply:
    """A JSON answer; ``data`` must already be plain JSON values."""
    return Reply(status, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())


def xrpc_error(status: int, error: str, message: str) -> Reply:
    """An XRPC error answer: ``{"error": NAME, "message": TEXT}``."""
    return json_reply({"error": error, "message": message}, status)


async def send(request: web.BaseRequest, reply: Reply) -> tuple[web.StreamResponse, int]:
    """Write ``reply``; return the response and the body bytes written.

    An :class:`Abort` raised by the body drops the connection, and a client that hangs up
    ends the answer; either way the bytes written so far are returned and the response is
    left unfinished (aiohttp closes the transport).
    """
    headers = {"Content-Type": reply.content_type, **reply.headers}
    response = web.StreamResponse(status=reply.status, headers=headers)
    sent = 0
    try:
        if isinstance(reply.body, bytes) and not reply.chunked:
            response.content_length = len(reply.body)
            await response.prepare(request)
            await response.write(reply.body)
            sent = len(reply.body)
        else:
            response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in _chunks(reply.body):
                await response.write(chunk)
                sent += len(chunk)
        await response.write_eof()
    except Abort:
        _drop(request)
    except ConnectionError:
        pass  # the client went away mid-answer: nothing left to write to
    return response, sent


async def _chunks(body: bytes | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), _CHUNK_BYTES):
            yield body[start : start + _CHUNK_BYTES]
        return
    async for chunk in body:
        yield chunk


def _drop(request: web.BaseRequest) -> None:
    """Close the connection at once, without the chunked terminator (a cut body)."""
    if request.transport is not None:
        request.transport.abort()
