"""XrpcClient against real aiohttp (and raw TCP) servers on 127.0.0.1; nothing is mocked."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bsky_backfill import __version__
from bsky_backfill.atproto.xrpc import (
    TRANSPORT_ERRORS,
    Body,
    ParamValue,
    RateLimitInfo,
    XrpcClient,
    XrpcOptions,
    map_transport_error,
    transport_error_class,
)
from bsky_backfill.errors import (
    BackfillError,
    HostUnavailable,
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    RepoTooLarge,
    ResponseTooLarge,
    RetryableError,
    XrpcError,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
NOW = 1_800_000_000.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a real aiohttp server answering ``GET /xrpc/{nsid}`` (and ``GET /{tail}``)
    with ``handler``; returns its base URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/xrpc/{nsid}", handler)
        app.router.add_get("/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def serve_raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """Start a raw TCP server (for misbehaviour aiohttp's server will not produce)."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[XrpcClient]:
    async with XrpcClient.open(
        XrpcOptions(read_timeout=5, total_timeout=10), clock=lambda: NOW
    ) as xrpc:
        yield xrpc


def xrpc_error(status: int, name: str, message: str = "no", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": name, "message": message}, status=status, headers=headers
        )

    return handler


def answer(
    status: int = 200, body: bytes = b"{}", headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    return handler


def chunked(total: int, chunk: int = 64 * 1024, sent: list[int] | None = None) -> Handler:
    """A chunked body (no Content-Length) of ``total`` bytes; ``sent`` records progress."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for offset in range(0, total, chunk):
            await response.write(bytes([offset // chunk % 256]) * min(chunk, total - offset))
            if sent is not None:
                sent.append(min(chunk, total - offset))
        await response.write_eof()
        return response

    return handler


def files_in(directory: Path) -> list[str]:
    return os.listdir(directory)


def expected_body(total: int, chunk: int = 64 * 1024) -> bytes:
    return b"".join(
        bytes([offset // chunk % 256]) * min(chunk, total - offset)
        for offset in range(0, total, chunk)
    )


# --- success and rate-limit headers ---------------------------------------------------


async def test_get_json_returns_data_status_and_rate_limits(
    serve: Serve, client: XrpcClient
) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["path"] = request.path
        seen["query"] = list(request.query.items())
        seen["agent"] = request.headers["User-Agent"]
        headers = {
            "RateLimit-Limit": "3000",
            "RateLimit-Remaining": "2999",
            "RateLimit-Reset": "1800000300",
            "RateLimit-Policy": "3000;w=300",
        }
        return web.json_response({"cid": "bafy", "rev": "3l"}, headers=headers)

    base = await serve(handler)
    params: dict[str, ParamValue] = {"did": DID, "limit": 5, "reverse": True, "cids": ["a", "b"]}
    response = await client.get_json(base + "/", "com.atproto.sync.getLatestCommit", params)

    assert response.data == {"cid": "bafy", "rev": "3l"}
    assert response.status == 200
    assert response.rate_limit == RateLimitInfo(
        limit=3000, remaining=2999, reset_at=1_800_000_300.0, policy_limit=3000, policy_window=300.0
    )
    assert seen["path"] == "/xrpc/com.atproto.sync.getLatestCommit"
    assert seen["query"] == [
        ("did", DID),
        ("limit", "5"),
        ("reverse", "true"),
        ("cids", "a"),
        ("cids", "b"),
    ]
    assert seen["agent"] == f"bsky-backfill/{__version__}"


async def test_missing_rate_limit_headers_are_none(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(body=b'{"ok": true}'))
    response = await client.get_json(base, "com.example.ok")
    assert response.rate_limit == RateLimitInfo()


async def test_malformed_rate_limit_headers_are_none(serve: Serve, client: XrpcClient) -> None:
    headers = {
        "RateLimit-Limit": "lots",
        "RateLimit-Remaining": "-1",
        "RateLimit-Reset": "in 5 minutes",
        "RateLimit-Policy": ";w=abc",
        "Retry-After": "soon",
    }
    base = await serve(answer(headers=headers))
    response = await client.get_json(base, "com.example.ok")
    assert response.rate_limit == RateLimitInfo()


# --- error answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error_class"),
    [
        ("RepoNotFound", RepoNotFound),
        ("RepoTakendown", RepoTakendown),
        ("RepoDeactivated", RepoDeactivated),
        ("RepoSuspended", RepoSuspended),
    ],
)
async def test_named_repo_errors_map_to_their_class(
    serve: Serve, client: XrpcClient, name: str, error_class: type[BackfillError]
) -> None:
    base = await serve(xrpc_error(400, name, f"Could not find repo: {DID}"))
    with pytest.raises(error_class) as caught:
        await client.get_json(base, "com.atproto.sync.getLatestCommit", {"did": DID})
    error = caught.value
    assert error.did == DID
    assert error.host == base.removeprefix("http://")
    assert error.url == f"{base}/xrpc/com.atproto.sync.getLatestCommit?did={DID}"
    assert name in error.message
    assert "Could not find repo" in error.message


async def test_other_error_names_are_xrpc_errors(serve: Serve, client: XrpcClient) -> None:
    base = await serve(xrpc_error(400, "InvalidRequest", "bad\n  cursor"))
    with pytest.raises(XrpcError) as caught:
        await client.get_json(base, "com.atproto.sync.listRepos", {"repo": DID})
    assert (caught.value.error, caught.value.status) == ("InvalidRequest", 400)
    assert caught.value.did == DID  # a repo parameter holding a DID labels the error too
    assert "bad cursor" in caught.value.message  # whitespace collapsed


async def test_non_json_error_body_is_an_xrpc_error(serve: Serve, client: XrpcClient) -> None:
    base = await serve(
        answer(404, b"<html>Not Found</html>", headers={"Content-Type": "text/html"})
    )
    with pytest.raises(XrpcError) as caught:
        await client.get_json(base, "com.example.missing")
    assert (caught.value.error, caught.value.status) == (None, 404)


async def test_repo_error_name_on_a_5xx_is_host_unavailable(
    serve: Serve, client: XrpcClient
) -> None:
    # PDS 0.4.x answered 500 where 0.5.x answers 400: a 5xx is never trusted as final.
    base = await serve(xrpc_error(500, "RepoNotFound"))
    with pytest.raises(HostUnavailable):
        await client.get_json(base, "com.atproto.sync.getRepo", {"did": DID})


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_host_unavailable(serve: Serve, client: XrpcClient, status: int) -> None:
    base = await serve(answer(status, b"upstream trouble", headers={"Retry-After": "12"}))
    with pytest.raises(HostUnavailable) as caught:
        await client.get_json(base, "com.example.x", {"did": DID})
    assert caught.value.retry_after == 12.0
    assert caught.value.did == DID


async def test_429_with_retry_after(serve: Serve, client: XrpcClient) -> None:
    headers = {"Retry-After": "7", "RateLimit-Reset": str(int(NOW) + 100)}
    base = await serve(xrpc_error(429, "RateLimitExceeded", "slow down", **headers))
    with pytest.raises(RateLimited) as caught:
        await client.get_json(base, "com.atproto.sync.getRepo", {"did": DID})
    assert caught.value.retry_after == 7.0
    assert isinstance(caught.value, RetryableError)
    assert caught.value.did == DID


async def test_429_without_retry_after_uses_absolute_reset(
    serve: Serve, client: XrpcClient
) -> None:
    # RateLimit-Reset is absolute unix seconds: 42 s after the client's clock.
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(NOW) + 42)}
    base = await serve(xrpc_error(429, "RateLimitExceeded", **headers))
    with pytest.raises(RateLimited) as caught:
        await client.get_json(base, "com.atproto.sync.getRepo")
    assert caught.value.retry_after == 42.0


async def test_429_without_any_header(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(429, b"Too Many Requests"))
    with pytest.raises(RateLimited) as caught:
        await client.get_json(base, "com.atproto.sync.getRepo")
    assert caught.value.retry_after is None


async def test_rate_limit_exceeded_name_on_a_400(serve: Serve, client: XrpcClient) -> None:
    base = await serve(xrpc_error(400, "RateLimitExceeded"))
    with pytest.raises(RateLimited):
        await client.get_json(base, "com.atproto.sync.getRepo")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"[" * 100_000])
async def test_success_body_that_is_not_an_object(
    serve: Serve, client: XrpcClient, body: bytes
) -> None:
    base = await serve(answer(200, body))
    with pytest.raises(XrpcError) as caught:
        await client.get_json(base, "com.example.x")
    assert (caught.value.error, caught.value.status) == ("InvalidResponse", 200)


async def test_redirect_to_a_non_http_url_is_permanent(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(302, b"", headers={"Location": "ftp://example.invalid/x"}))
    with pytest.raises(XrpcError) as caught:
        await client.get_json(base, "com.example.x")
    assert not isinstance(caught.value, RetryableError)


async def test_bad_base_url_is_a_value_error(client: XrpcClient) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        await client.get_json("ftp://example.invalid", "com.example.x")


# --- size caps and spooling ------------------------------------------------------------


async def test_json_over_the_cap_with_content_length(serve: Serve) -> None:
    base = await serve(answer(200, b'{"a": "' + b"x" * 2000 + b'"}'))
    async with XrpcClient.open(XrpcOptions(max_json_bytes=1000)) as client:
        with pytest.raises(ResponseTooLarge) as caught:
            await client.get_json(base, "com.example.x", {"did": DID})
    assert caught.value.did == DID


async def test_json_over_the_cap_when_chunked(serve: Serve) -> None:
    base = await serve(chunked(300 * 1024))
    async with XrpcClient.open(XrpcOptions(max_json_bytes=100 * 1024)) as client:
        with pytest.raises(ResponseTooLarge):
            await client.get_json(base, "com.example.x")


async def test_small_body_stays_in_memory(serve: Serve, client: XrpcClient, tmp_path: Path) -> None:
    base = await serve(chunked(1000))
    with await client.get_body(base, "com.atproto.sync.getRepo", spool_dir=tmp_path) as body:
        assert body.data == expected_body(1000)
        assert body.path is None
        assert body.content == body.data
        assert body.size == 1000
        assert body.status == 200
    assert files_in(tmp_path) == []


async def test_large_chunked_body_is_spooled_and_close_deletes_it(
    serve: Serve, tmp_path: Path
) -> None:
    total = 3 * 1024 * 1024 + 123
    base = await serve(chunked(total))
    async with XrpcClient.open(XrpcOptions(spool_threshold=100_000)) as client:
        body = await client.get_body(
            base, "com.atproto.sync.getRepo", {"did": DID}, spool_dir=tmp_path
        )
    assert body.data is None
    assert body.path is not None
    assert body.path.parent == tmp_path
    assert body.content == body.path
    assert body.size == total
    assert body.path.read_bytes() == expected_body(total)
    assert "path=" in repr(body)
    body.close()
    body.close()  # idempotent
    assert files_in(tmp_path) == []


async def test_body_over_the_cap_is_aborted_while_streaming(serve: Serve, tmp_path: Path) -> None:
    total, cap = 64 * 1024 * 1024, 1024 * 1024
    sent: list[int] = []
    base = await serve(chunked(total, sent=sent))
    async with XrpcClient.open(XrpcOptions(spool_threshold=100_000)) as client:
        with pytest.raises(RepoTooLarge) as caught:
            await client.get_body(
                base,
                "com.atproto.sync.getRepo",
                {"did": DID},
                max_bytes=cap,
                spool_dir=tmp_path,
                too_large=RepoTooLarge,
            )
    assert caught.value.did == DID
    assert files_in(tmp_path) == []  # the partial spool file is gone
    assert sum(sent) < total  # the download stopped; the server never finished


async def test_body_over_the_cap_by_content_length(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(200, b"x" * 5000))
    with pytest.raises(ResponseTooLarge, match="5000 bytes"):
        await client.get_body(base, "com.atproto.sync.getRepo", max_bytes=4999)


async def test_body_exactly_at_the_cap_is_accepted(serve: Serve, client: XrpcClient) -> None:
    base = await serve(chunked(5000, chunk=1000))
    with await client.get_body(base, "com.atproto.sync.getRepo", max_bytes=5000) as body:
        assert body.size == 5000


async def test_error_answer_of_get_body(serve: Serve, client: XrpcClient, tmp_path: Path) -> None:
    base = await serve(xrpc_error(400, "RepoTakendown"))
    with pytest.raises(RepoTakendown):
        await client.get_body(base, "com.atproto.sync.getRepo", {"did": DID}, spool_dir=tmp_path)
    assert files_in(tmp_path) == []


async def test_cancelled_download_leaves_no_file(serve: Serve, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"x" * 200_000)
        started.set()
        await asyncio.sleep(30)
        return response

    base = await serve(slow)
    async with XrpcClient.open(XrpcOptions(spool_threshold=1000)) as client:
        task = asyncio.create_task(
            client.get_body(base, "com.atproto.sync.getRepo", spool_dir=tmp_path)
        )
        await started.wait()
        # Nothing signals the spool file's creation; poll for it.
        while not files_in(tmp_path):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert files_in(tmp_path) == []


def test_body_requires_closing_only_for_files(tmp_path: Path) -> None:
    memory = Body(b"abc", size=3, status=200, rate_limit=RateLimitInfo())
    memory.close()
    assert memory.data == b"abc"
    assert repr(memory) == "Body(size=3, in memory)"


# --- network failures -----------------------------------------------------------------


async def test_connection_refused_is_host_unavailable(client: XrpcClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HostUnavailable) as caught:
        await client.get_json(f"http://127.0.0.1:{port}", "com.example.x", {"did": DID})
    assert caught.value.host == f"127.0.0.1:{port}"
    assert caught.value.did == DID
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_connection_reset_is_host_unavailable(
    serve_raw: Callable[[RawHandler], Awaitable[str]], client: XrpcClient
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # SO_LINGER 0 makes close() send RST instead of FIN.
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    base = await serve_raw(reset)
    with pytest.raises(HostUnavailable) as caught:
        await client.get_json(base, "com.example.x")
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


async def test_disconnect_before_answer_is_host_unavailable(
    serve_raw: Callable[[RawHandler], Awaitable[str]], client: XrpcClient
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    base = await serve_raw(hang_up)
    with pytest.raises(HostUnavailable) as caught:
        await client.get_json(base, "com.example.x")
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_body_cut_mid_stream_is_host_unavailable(
    serve_raw: Callable[[RawHandler], Awaitable[str]], client: XrpcClient, tmp_path: Path
) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/vnd.ipld.car\r\n\r\n"
            b"10000\r\n" + b"x" * 1000
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    base = await serve_raw(cut)
    with pytest.raises(HostUnavailable) as caught:
        await client.get_body(base, "com.atproto.sync.getRepo", {"did": DID}, spool_dir=tmp_path)
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
    assert caught.value.did == DID
    assert files_in(tmp_path) == []


async def test_stalled_server_times_out(serve: Serve) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    base = await serve(stall)
    async with XrpcClient.open(XrpcOptions(read_timeout=0.2)) as client:
        with pytest.raises(HostUnavailable) as caught:
            await client.get_json(base, "com.example.x", {"did": DID})
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert caught.value.did == DID


async def test_body_stalled_mid_stream_times_out(serve: Serve, tmp_path: Path) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"x" * 300_000)
        await asyncio.sleep(30)
        return response

    base = await serve(stall)
    async with XrpcClient.open(XrpcOptions(read_timeout=0.2, spool_threshold=1000)) as client:
        with pytest.raises(HostUnavailable):
            await client.get_body(base, "com.atproto.sync.getRepo", spool_dir=tmp_path)
    assert files_in(tmp_path) == []


async def test_total_timeout(serve: Serve) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    base = await serve(trickle)
    async with XrpcClient.open(XrpcOptions(read_timeout=1, total_timeout=0.3)) as client:
        with pytest.raises(HostUnavailable):
            await client.get_body(base, "com.atproto.sync.getRepo")


# --- the exception mapping table ----------------------------------------------------------


def _all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


PERMANENT_AIOHTTP_ERRORS = {
    aiohttp.TooManyRedirects,
    aiohttp.InvalidURL,
    aiohttp.InvalidUrlClientError,
    aiohttp.InvalidUrlRedirectClientError,
    aiohttp.NonHttpUrlClientError,
    aiohttp.NonHttpUrlRedirectClientError,
}


def test_every_aiohttp_exception_is_mapped() -> None:
    aiohttp_errors = {aiohttp.ClientError} | _all_subclasses(aiohttp.ClientError)
    aiohttp_errors = {cls for cls in aiohttp_errors if cls.__module__.startswith("aiohttp")}
    assert len(aiohttp_errors) > 20  # the enumeration really found aiohttp's tree
    for cls in aiohttp_errors | {TimeoutError, asyncio.TimeoutError}:
        target = transport_error_class(cls)
        expected = XrpcError if cls in PERMANENT_AIOHTTP_ERRORS else HostUnavailable
        assert target is expected, cls


def test_mapping_table_only_targets_backfill_errors() -> None:
    assert all(issubclass(target, BackfillError) for _, target in TRANSPORT_ERRORS)


def test_map_transport_error_keeps_context_and_detail() -> None:
    error = map_transport_error(
        aiohttp.ServerDisconnectedError("gone"), did=DID, host="pds.example", url="u"
    )
    assert isinstance(error, HostUnavailable)
    assert (error.did, error.host, error.url) == (DID, "pds.example", "u")
    assert error.message == "ServerDisconnectedError: gone"
    assert map_transport_error(TimeoutError()).message == "TimeoutError"


def test_map_transport_error_refuses_unrelated_exceptions() -> None:
    assert transport_error_class(KeyError) is None
    with pytest.raises(TypeError):
        map_transport_error(KeyError("x"))


# --- get_url -------------------------------------------------------------------------------


async def test_get_url_returns_non_retryable_answers(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(404, b"DID not registered"))
    response = await client.get_url(f"{base}/{DID}", did=DID)
    assert (response.status, response.body) == (404, b"DID not registered")


async def test_get_url_returns_a_2xx_body(serve: Serve, client: XrpcClient) -> None:
    base = await serve(answer(200, b'{"id": 1}', headers={"RateLimit-Remaining": "9"}))
    response = await client.get_url(f"{base}/{DID}")
    assert (response.status, response.body) == (200, b'{"id": 1}')
    assert response.rate_limit.remaining == 9


@pytest.mark.parametrize(("status", "error_class"), [(429, RateLimited), (503, HostUnavailable)])
async def test_get_url_raises_retryable_answers(
    serve: Serve, client: XrpcClient, status: int, error_class: type[BackfillError]
) -> None:
    base = await serve(answer(status, b"busy"))
    with pytest.raises(error_class) as caught:
        await client.get_url(f"{base}/{DID}", did=DID)
    assert caught.value.did == DID
    assert caught.value.url == f"{base}/{DID}"


async def test_get_url_caps_the_body(serve: Serve, client: XrpcClient) -> None:
    base = await serve(chunked(10_000, chunk=1000))
    with pytest.raises(ResponseTooLarge):
        await client.get_url(f"{base}/{DID}", max_bytes=5000)


# --- ownership -------------------------------------------------------------------------


async def test_client_does_not_close_a_session_it_was_given(serve: Serve) -> None:
    base = await serve(answer(200, json.dumps({"n": 1}).encode()))
    async with aiohttp.ClientSession() as session:
        client = XrpcClient(session)
        assert (await client.get_json(base, "com.example.x")).data == {"n": 1}
        assert not session.closed


async def test_open_closes_its_session_but_not_a_given_connector(serve: Serve) -> None:
    base = await serve(answer(200, b"{}"))
    connector = aiohttp.TCPConnector()
    try:
        async with XrpcClient.open(connector=connector) as client:
            await client.get_json(base, "com.example.x")
        assert not connector.closed
    finally:
        await connector.close()


async def test_raise_for_status_session_still_maps_errors(serve: Serve) -> None:
    base = await serve(xrpc_error(400, "RepoNotFound"))
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        with pytest.raises(RepoNotFound):
            await XrpcClient(session).get_json(base, "com.atproto.sync.getRepo")


def test_options_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        XrpcOptions(read_timeout=0)


def _self_signed(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate nobody vouches for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


async def test_tls_certificates_are_verified(tmp_path: Path) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/xrpc/{nsid}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_self_signed(tmp_path))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with XrpcClient.open() as client:
            with pytest.raises(HostUnavailable, match="certificate verify failed"):
                await client.get_json(f"https://127.0.0.1:{port}", "com.atproto.sync.getHead")
    finally:
        await runner.cleanup()
