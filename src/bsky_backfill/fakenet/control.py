"""Changing the simulated world while clients use it, and reading what they did.

:class:`Controller` holds the operations (as Python methods, the ones ``FakeNetwork``
exposes); :func:`control_routes` serves them as JSON over HTTP under ``/_fakenet/`` on the
PLC directory's port, for a network running in another process:

| method and path | body / query | answer |
| --- | --- | --- |
| ``PUT /_fakenet/record`` | ``{did, collection, rkey, value}`` (atproto JSON) | ``{rev}`` |
| ``DELETE /_fakenet/record`` | ``?did=&collection=&rkey=`` | ``{rev}`` (404 if absent) |
| ``POST /_fakenet/status`` | ``{did, status}`` | ``{}`` |
| ``POST /_fakenet/move`` | ``{did, host}`` | ``{}`` |
| ``GET /_fakenet/log`` | ``?host=&plc=&client=&endpoint=&did=&status=`` | ``{entries, dropped}`` |
| ``DELETE /_fakenet/log`` | | ``{cleared}`` |

Errors are ``{"error", "message"}``: 400 for bad input, 404 for an unknown DID or record.
Everything runs on the server's event loop, so a change lands between two requests, never
inside one; a repo being built or sent keeps the version it started with.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final, get_args

import cbrrr
from aiohttp import web

from bsky_backfill.atproto.syntax import is_valid_nsid, is_valid_record_key
from bsky_backfill.fakenet.population import Status
from bsky_backfill.fakenet.requestlog import RequestLog
from bsky_backfill.fakenet.world import World

__all__ = ["PREFIX", "ControlError", "Controller", "control_routes", "from_atproto_json"]

PREFIX: Final = "/_fakenet"
_STATUSES: Final = frozenset(get_args(Status))


class ControlError(Exception):
    """A control request that cannot be done; ``status`` is its HTTP status (400 or 404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def from_atproto_json(value: Any) -> Any:
    """A record value from its atproto JSON form: ``{"$link": cid}`` becomes a CID link and
    ``{"$bytes": base64}`` bytes, at any depth. Raises ``ControlError`` for a bad one."""
    if isinstance(value, list):
        return [from_atproto_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"$link"}:
        try:
            return cbrrr.CID.decode(value["$link"])
        except (ValueError, TypeError) as error:
            raise ControlError(f"bad $link {value['$link']!r}: {error}") from None
    if set(value) == {"$bytes"}:
        text = value["$bytes"]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, TypeError) as error:
            raise ControlError(f"bad $bytes value: {error}") from None
    return {key: from_atproto_json(item) for key, item in value.items()}


class Controller:
    """The world's mutations and the request log, checked and with clear errors."""

    def __init__(self, world: World, log: RequestLog) -> None:
        self._world = world
        self._log = log

    def put_record(self, did: str, collection: str, rkey: str, value: dict[str, Any]) -> str:
        """Create or replace a record (links as ``cbrrr.CID``); returns the new rev."""
        self._account(did)
        if not is_valid_nsid(collection) or not is_valid_record_key(rkey):
            raise ControlError(f"not a valid collection / record key: {collection}/{rkey}")
        if not isinstance(value, dict):
            raise ControlError("a record value is a JSON object")
        return self._world.put_record(did, collection, rkey, value)

    def delete_record(self, did: str, collection: str, rkey: str) -> str:
        """Delete a record; returns the new rev. ``ControlError`` (404) if it is absent."""
        self._account(did)
        try:
            return self._world.delete_record(did, collection, rkey)
        except KeyError:
            raise ControlError(f"{did} has no record {collection}/{rkey}", 404) from None

    def set_status(self, did: str, status: str) -> None:
        """Set the account's status (``active``, ``deactivated``, ``takendown``, ...)."""
        self._account(did)
        if status not in _STATUSES:
            raise ControlError(f"unknown status {status!r}; one of {', '.join(sorted(_STATUSES))}")
        self._world.set_status(did, status)  # type: ignore[arg-type]

    def move(self, did: str, host: int) -> None:
        """Migrate the account to ``host``: its DID document follows, the old host says
        RepoNotFound."""
        self._account(did)
        if not isinstance(host, int) or not 0 <= host < self._world.spec.hosts:
            raise ControlError(f"host {host!r} is outside 0..{self._world.spec.hosts - 1}")
        self._world.move(did, host)

    def _account(self, did: object) -> None:
        if not isinstance(did, str) or self._world.get(did) is None:
            raise ControlError(f"no account {did!r}", 404)


_Handler = Callable[[web.Request], Awaitable[web.Response]]


def control_routes(controller: Controller, log: RequestLog) -> list[web.RouteDef]:
    """The ``/_fakenet/`` routes over ``controller`` and ``log``."""

    async def put_record(request: web.Request) -> web.Response:
        body = await _body(request, "did", "collection", "rkey", "value")
        value = from_atproto_json(body["value"])
        rev = controller.put_record(body["did"], body["collection"], body["rkey"], value)
        return _ok({"rev": rev})

    async def delete_record(request: web.Request) -> web.Response:
        query = _query(request, "did", "collection", "rkey")
        return _ok({"rev": controller.delete_record(**query)})

    async def set_status(request: web.Request) -> web.Response:
        body = await _body(request, "did", "status")
        controller.set_status(body["did"], body["status"])
        return _ok({})

    async def move(request: web.Request) -> web.Response:
        body = await _body(request, "did", "host")
        controller.move(body["did"], body["host"])
        return _ok({})

    async def read_log(request: web.Request) -> web.Response:
        try:
            entries = log.entries(**_log_filters(request))
        except ValueError as error:
            raise ControlError(str(error)) from None
        return _ok({"entries": [e.to_dict() for e in entries], "dropped": log.dropped})

    async def clear_log(request: web.Request) -> web.Response:
        return _ok({"cleared": log.clear()})

    return [
        web.put(f"{PREFIX}/record", _guarded(put_record)),
        web.delete(f"{PREFIX}/record", _guarded(delete_record)),
        web.post(f"{PREFIX}/status", _guarded(set_status)),
        web.post(f"{PREFIX}/move", _guarded(move)),
        web.get(f"{PREFIX}/log", _guarded(read_log)),
        web.delete(f"{PREFIX}/log", _guarded(clear_log)),
    ]


def _guarded(handler: _Handler) -> _Handler:
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ControlError as error:
            name = "NotFound" if error.status == 404 else "InvalidRequest"
            return web.json_response({"error": name, "message": str(error)}, status=error.status)

    return guarded


def _ok(data: dict[str, Any]) -> web.Response:
    return web.json_response(data)


async def _body(request: web.Request, *names: str) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except ValueError:
        raise ControlError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError("the body is a JSON object")
    missing = [name for name in names if name not in body]
    if missing:
        raise ControlError(f"missing {', '.join(missing)}")
    return body


def _query(request: web.Request, *names: str) -> dict[str, str]:
    missing = [name for name in names if name not in request.query]
    if missing:
        raise ControlError(f"missing {', '.join(missing)}")
    return {name: request.query[name] for name in names}


def _log_filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    filters: dict[str, Any] = {"plc": query.get("plc") == "true"}
    for name in ("client", "endpoint", "did"):
        if name in query:
            filters[name] = query[name]
    for name in ("host", "status"):
        if name in query:
            if not query[name].isdigit():
                raise ControlError(f"{name} must be an integer")
            filters[name] = int(query[name])
    return filters
