"""An aiohttp client for XRPC queries (``GET {base}/xrpc/{nsid}?params``) and plain GETs.

Every answer, success or error, carries the host's rate-limit headers as
:class:`RateLimitInfo`, so a scheduler can slow down before it is told to stop.

Failures leave this module only as :mod:`bsky_backfill.errors` classes, translated in one
section ("Error mapping" below): :data:`TRANSPORT_ERRORS` for aiohttp exceptions and
timeouts, :func:`map_response_error` for HTTP error answers.

Ownership: an :class:`XrpcClient` built on a session you pass never closes it; the one
:meth:`XrpcClient.open` creates is closed when its ``async with`` block ends. A
:class:`Body` spooled to a temporary file deletes it on :meth:`Body.close`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Protocol, TypeAlias, TypedDict

import aiohttp
from yarl import URL

from bsky_backfill import __version__
from bsky_backfill.atproto.ratelimit import RateLimitInfo
from bsky_backfill.errors import (
    BackfillError,
    HostUnavailable,
    PermanentError,
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    ResponseTooLarge,
    RetryableError,
    XrpcError,
)

__all__ = [
    "TRANSPORT_ERRORS",
    "Body",
    "HttpResponse",
    "ParamValue",
    "RateLimitInfo",
    "RequestObserver",
    "XrpcClient",
    "XrpcOptions",
    "XrpcResponse",
    "map_response_error",
    "map_transport_error",
    "transport_error_class",
]

ParamValue: TypeAlias = str | int | bool | Sequence[str]
"""A query parameter: a bool is sent as ``true``/``false``, a sequence as repeated keys."""

DOCUMENT_ENDPOINT: Final = "did_document"
"""The endpoint label of :meth:`XrpcClient.get_url` requests (DID documents)."""


class RequestObserver(Protocol):
    """Told of every request a client makes (metrics): its start, then its end with the
    HTTP status (or the error's class name when no answer came), the seconds it took,
    body included, and the body bytes received."""

    def request_started(self, host: str | None) -> None: ...

    def request_finished(
        self, host: str | None, endpoint: str, status: str, seconds: float, size: int
    ) -> None: ...


_CHUNK_BYTES: Final = 64 * 1024
# Spooled bodies are written in batches, each in a worker thread: a slow disk (or the
# kernel throttling dirty pages) must not stall every other download on the event loop.
_SPOOL_WRITE_BYTES: Final = 1024 * 1024
# Error answers are read only this far: enough for any XRPC error JSON, and a hostile
# host cannot make us buffer a large "error page".
_ERROR_BODY_BYTES: Final = 64 * 1024
_MAX_NAME_CHARS: Final = 100
_MAX_MESSAGE_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class XrpcOptions:
    """Timeouts (seconds) and size caps (bytes) for every request of one client.

    ``connect_timeout``: TCP + TLS connect. ``read_timeout``: the longest silence while
    reading. ``total_timeout``: the whole exchange, body included (the largest repos take
    ~3 min). ``max_json_bytes``: a JSON answer (``ResponseTooLarge`` beyond it).
    ``max_body_bytes``: the default cap of :meth:`XrpcClient.get_body`.
    ``spool_threshold``: a streamed body larger than this goes to a temporary file.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 900.0
    max_json_bytes: int = 4 * 1024**2
    max_body_bytes: int = 2 * 1024**3
    spool_threshold: int = 16 * 1024**2
    user_agent: str = f"bsky-backfill/{__version__}"

    def __post_init__(self) -> None:
        numbers = (self.connect_timeout, self.read_timeout, self.total_timeout)
        sizes = (self.max_json_bytes, self.max_body_bytes, self.spool_threshold)
        if min(numbers) <= 0 or min(sizes) <= 0:
            raise ValueError("XrpcOptions timeouts and sizes must be positive")


# --- Responses --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XrpcResponse:
    """A successful XRPC answer: its JSON object, HTTP status and rate-limit headers."""

    data: dict[str, object]
    status: int
    rate_limit: RateLimitInfo


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A non-retryable answer of :meth:`XrpcClient.get_url`, success or not.

    ``body`` is whole for a 2xx answer and cut at 64 KiB otherwise.
    """

    status: int
    body: bytes
    rate_limit: RateLimitInfo


class Body:
    """A downloaded body, in memory (``data``) or in a temporary file (``path``).

    The owner calls :meth:`close` (or uses ``with``), which deletes the file; it is
    idempotent. Nothing else deletes the file, so a crash can leave it in the spool
    directory.
    """

    __slots__ = ("_content", "rate_limit", "size", "status")

    def __init__(
        self, content: bytes | Path, *, size: int, status: int, rate_limit: RateLimitInfo
    ) -> None:
        self._content = content
        self.size = size
        self.status = status
        self.rate_limit = rate_limit

    @property
    def content(self) -> bytes | Path:
        """The bytes or the file, whichever holds the body (as ``open_car`` takes it)."""
        return self._content

    @property
    def data(self) -> bytes | None:
        """The bytes when the body stayed in memory, else None."""
        return self._content if isinstance(self._content, bytes) else None

    @property
    def path(self) -> Path | None:
        """The temporary file when the body was spooled, else None."""
        return self._content if isinstance(self._content, Path) else None

    def close(self) -> None:
        """Delete the temporary file, if any."""
        if isinstance(self._content, Path):
            self._content.unlink(missing_ok=True)

    def __enter__(self) -> Body:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"path={str(self.path)!r}"
        return f"Body(size={self.size}, {where})"


# --- Error mapping: the one place library exceptions and error answers become ours --------


class _Context(TypedDict):
    did: str | None
    host: str | None
    url: str | None


TRANSPORT_ERRORS: Final[tuple[tuple[type[BaseException], type[BackfillError]], ...]] = (
    # A redirect loop or a redirect to a bad or non-HTTP URL: the same request will get
    # the same answer.
    (aiohttp.TooManyRedirects, XrpcError),
    (aiohttp.InvalidURL, XrpcError),
    (aiohttp.NonHttpUrlClientError, XrpcError),
    # Everything else is the network or the host: refused, reset, DNS, TLS, a body cut
    # mid-stream (ClientPayloadError) and timeouts. A body cut in transit is the host's
    # or the path's fault, not the repo's, so it is HostUnavailable rather than
    # TruncatedRepo: the host gets backed off, and the DID retried.
    (aiohttp.ClientError, HostUnavailable),
    (TimeoutError, HostUnavailable),
)
"""aiohttp exceptions (and timeouts) to error classes; the first matching row wins."""

_CAUGHT: Final = tuple(source for source, _ in TRANSPORT_ERRORS)

_NAMED_ERRORS: Final[dict[str, type[PermanentError]]] = {
    "RepoNotFound": RepoNotFound,
    "RepoTakendown": RepoTakendown,
    "RepoDeactivated": RepoDeactivated,
    "RepoSuspended": RepoSuspended,
}


def transport_error_class(exc_type: type[BaseException]) -> type[BackfillError] | None:
    """The error class :data:`TRANSPORT_ERRORS` maps ``exc_type`` to, or None if unmapped."""
    return next(
        (target for source, target in TRANSPORT_ERRORS if issubclass(exc_type, source)), None
    )


def map_transport_error(exc: BaseException, **context: str | None) -> BackfillError:
    """Translate an aiohttp exception or timeout; ``context`` is ``did``, ``host``, ``url``.

    Raises ``TypeError`` for an exception :data:`TRANSPORT_ERRORS` does not cover.
    """
    target = transport_error_class(type(exc))
    if target is None:
        raise TypeError(f"not a transport error: {type(exc).__name__}")
    detail = _clip(str(exc), _MAX_MESSAGE_CHARS)
    return target(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__, **context)


def map_response_error(
    status: int, body: bytes, rate_limit: RateLimitInfo, *, now: float, **context: str | None
) -> BackfillError:
    """Translate a non-2xx answer, reading an XRPC ``{"error", "message"}`` body if present.

    429 (or the error ``RateLimitExceeded``) -> ``RateLimited`` with ``retry_after`` from
    ``Retry-After``, else ``RateLimit-Reset - now``; 5xx -> ``HostUnavailable``; a 4xx
    naming ``RepoNotFound`` / ``RepoTakendown`` / ``RepoDeactivated`` / ``RepoSuspended``
    -> that class; anything else -> ``XrpcError``. Pure; never raises.
    """
    name, text = _error_fields(body)
    message = f"HTTP {status}" + (f" {name}" if name else "") + (f": {text}" if text else "")
    if status == 429 or name == "RateLimitExceeded":
        return RateLimited(
            message,
            retry_after=rate_limit.retry_delay(now),
            remaining=rate_limit.remaining,
            reset_at=rate_limit.reset_at,
            **context,
        )
    if status >= 500:
        return HostUnavailable(message, retry_after=rate_limit.retry_after, **context)
    named = _NAMED_ERRORS.get(name) if name and 400 <= status < 500 else None
    if named is not None:
        return named(message, **context)
    return XrpcError(message, error=name, status=status, **context)


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """The ``error`` and ``message`` strings of an XRPC error body, clipped; None if absent."""
    document = _loads(body)
    if not isinstance(document, dict):
        return None, None
    name, text = document.get("error"), document.get("message")
    return (
        _clip(name, _MAX_NAME_CHARS) if isinstance(name, str) and name else None,
        _clip(text, _MAX_MESSAGE_CHARS) if isinstance(text, str) and text else None,
    )


def _loads(body: bytes) -> object:
    """Parsed JSON, or None when ``body`` is not JSON (RecursionError: absurd nesting)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _clip(text: str, limit: int) -> str:
    """Whitespace collapsed (a hostile message cannot forge log lines), then cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@contextmanager
def _translated(context: _Context) -> Iterator[None]:
    try:
        yield
    except _CAUGHT as exc:
        raise map_transport_error(exc, **context) from exc


# --- Reading bodies ---------------------------------------------------------------------


async def _capped_chunks(
    response: aiohttp.ClientResponse,
    max_bytes: int,
    too_large: type[PermanentError],
    context: _Context,
) -> AsyncGenerator[bytes, None]:
    """The body's chunks; ``too_large`` is raised before a chunk would pass ``max_bytes``."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise too_large(f"body of {declared} bytes is over the {max_bytes}-byte cap", **context)
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(f"body is over the {max_bytes}-byte cap", **context)
        yield chunk


async def _read_capped(
    response: aiohttp.ClientResponse, max_bytes: int, context: _Context
) -> bytes:
    """The whole body in memory; ``ResponseTooLarge`` past ``max_bytes``."""
    chunks = [
        chunk async for chunk in _capped_chunks(response, max_bytes, ResponseTooLarge, context)
    ]
    return b"".join(chunks)


async def _read_prefix(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body; the rest is left unread (the connection is dropped)."""
    parts: list[bytes] = []
    remaining = limit
    while remaining > 0:
        part = await content.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class _Spool:
    """Holds a streamed body in memory up to ``threshold`` bytes, then in a temporary file.

    In memory, the chunks are kept as they came and joined once at the end: one copy of
    the body, into a buffer of its exact size (a growing ``bytearray`` copied it up to
    three times, each time into fresh memory the OS had to zero).
    """

    def __init__(self, threshold: int, directory: Path | None) -> None:
        self.size = 0
        self._chunks: list[bytes] = []
        self._held = 0  # bytes in _chunks
        self._threshold = threshold
        self._directory = directory
        self._file: BinaryIO | None = None
        self._path: Path | None = None

    async def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._chunks.append(chunk)
        self._held += len(chunk)
        if self._file is None and self.size > self._threshold:
            self._file, self._path = await asyncio.to_thread(_create_spool_file, self._directory)
        if self._file is not None and self._held >= _SPOOL_WRITE_BYTES:
            await self._flush(self._file)

    async def finish(self) -> bytes | Path:
        """The body: its bytes, or the closed spool file."""
        if self._file is None or self._path is None:
            body = b"".join(self._chunks)
            self._chunks, self._held = [], 0
            return body
        await self._flush(self._file)
        await asyncio.to_thread(self._file.close)
        return self._path

    def discard(self) -> None:
        """Drop the body and delete the spool file; safe to call at any point."""
        self._chunks, self._held = [], 0
        if self._file is not None:
            # Waits for a write still running in a worker thread (the buffered file's lock).
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    async def _flush(self, file: BinaryIO) -> None:
        chunks, self._chunks, self._held = self._chunks, [], 0
        await asyncio.to_thread(file.writelines, chunks)


def _create_spool_file(directory: Path | None) -> tuple[BinaryIO, Path]:
    descriptor, name = tempfile.mkstemp(prefix="bsky-backfill-", suffix=".body", dir=directory)
    return os.fdopen(descriptor, "wb"), Path(name)


# --- The client -------------------------------------------------------------------------


class XrpcClient:
    """XRPC GETs over an aiohttp session it does not own (see :meth:`open` for one it does).

    The session must not be closed while the client is in use; the client sets its own
    timeouts, User-Agent and ``raise_for_status=False`` on every request, so any session
    works. Safe to share between tasks.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: XrpcOptions = XrpcOptions(),
        *,
        clock: Callable[[], float] = time.time,
        observer: RequestObserver | None = None,
    ) -> None:
        self._session = session
        self._options = options
        self._clock = clock
        self._observer = observer
        self._timeout = aiohttp.ClientTimeout(
            total=options.total_timeout,
            sock_connect=options.connect_timeout,
            sock_read=options.read_timeout,
        )
        self._headers = {"User-Agent": options.user_agent}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        options: XrpcOptions = XrpcOptions(),
        *,
        connector: aiohttp.BaseConnector | None = None,
        clock: Callable[[], float] = time.time,
        observer: RequestObserver | None = None,
    ) -> AsyncIterator[XrpcClient]:
        """A client on a new session, closed when the ``async with`` block ends.

        A ``connector`` passed in (e.g. one that refuses private addresses) is used but
        not closed: whoever made it closes it. Cookies are never stored. ``observer`` is
        told of every request.
        """
        async with aiohttp.ClientSession(
            connector=connector,
            connector_owner=connector is None,
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            yield cls(session, options, clock=clock, observer=observer)

    @property
    def options(self) -> XrpcOptions:
        return self._options

    async def get_json(
        self, base_url: str, nsid: str, params: Mapping[str, ParamValue] | None = None
    ) -> XrpcResponse:
        """``GET {base_url}/xrpc/{nsid}?params`` and return its JSON object.

        Raises ``RateLimited``, ``HostUnavailable`` (5xx, network, timeout), the ``Repo*``
        class an XRPC error names, ``XrpcError`` (other error answers, or a 2xx body that
        is not a JSON object), ``ResponseTooLarge`` over ``max_json_bytes``, and
        ``ValueError`` if ``base_url`` is not an absolute http(s) URL.
        """
        url = _xrpc_url(base_url, nsid, params)
        context = _context(url, params)
        async with self._exchange(url, context, nsid) as (response, rate_limit):
            await self._raise_for_status(response, rate_limit, context)
            body = await _read_capped(response, self._options.max_json_bytes, context)
        return XrpcResponse(
            _json_object(body, response.status, context), response.status, rate_limit
        )

    async def get_body(
        self,
        base_url: str,
        nsid: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        max_bytes: int | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        too_large: type[PermanentError] = ResponseTooLarge,
    ) -> Body:
        """Stream ``GET {base_url}/xrpc/{nsid}?params`` into a :class:`Body` the caller closes.

        The body stays in memory up to ``spool_threshold`` bytes and goes to a temporary
        file in ``spool_dir`` (default: the system temp dir) beyond it. Over ``max_bytes``
        (default ``max_body_bytes``) the download stops and ``too_large`` is raised (pass
        ``RepoTooLarge`` for getRepo); no file is left behind on any error or
        cancellation. Other errors as :meth:`get_json`; a connection lost mid-body is
        ``HostUnavailable``.
        """
        url = _xrpc_url(base_url, nsid, params)
        context = _context(url, params)
        cap = self._options.max_body_bytes if max_bytes is None else max_bytes
        spool = _Spool(self._options.spool_threshold, Path(spool_dir) if spool_dir else None)
        try:
            async with self._exchange(url, context, nsid) as (response, rate_limit):
                await self._raise_for_status(response, rate_limit, context)
                async with aclosing(_capped_chunks(response, cap, too_large, context)) as chunks:
                    async for chunk in chunks:
                        await spool.add(chunk)
                content = await spool.finish()
        except BaseException:
            spool.discard()
            raise
        return Body(content, size=spool.size, status=response.status, rate_limit=rate_limit)

    async def get_url(
        self, url: str, *, did: str | None = None, max_bytes: int | None = None
    ) -> HttpResponse:
        """GET any http(s) URL (a DID document, say); the caller judges a non-2xx answer.

        Retryable answers are raised, not returned: 429 -> ``RateLimited``, 5xx ->
        ``HostUnavailable``, as are network errors and timeouts. A 2xx body over
        ``max_bytes`` (default ``max_json_bytes``) raises ``ResponseTooLarge``; so does a
        redirect loop or a redirect to a bad URL (``XrpcError``). ``did`` only labels errors.
        """
        target = _absolute_url(url)
        context = _Context(did=did, host=_host(target), url=str(target))
        cap = self._options.max_json_bytes if max_bytes is None else max_bytes
        async with self._exchange(target, context, DOCUMENT_ENDPOINT) as (response, rate_limit):
            if _is_success(response.status):
                body = await _read_capped(response, cap, context)
            else:
                body = await _read_prefix(response.content, _ERROR_BODY_BYTES)
                error = map_response_error(
                    response.status, body, rate_limit, now=self._clock(), **context
                )
                if isinstance(error, RetryableError):
                    raise error
        return HttpResponse(response.status, body, rate_limit)

    @asynccontextmanager
    async def _exchange(
        self, url: URL, context: _Context, endpoint: str
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, RateLimitInfo]]:
        """One GET, open for the block to read; aiohttp errors raised in the block (reading
        the body included) leave translated. The observer hears of it."""
        observer, host = self._observer, context["host"]
        if observer is not None:
            observer.request_started(host)
        started = time.perf_counter()
        status: str | None = None
        received: aiohttp.StreamReader | None = None
        try:
            with _translated(context):
                # Redirects are not followed: XRPC has none, and a redirect could point a
                # request at a host the endpoint checks never saw.
                async with self._session.get(
                    url,
                    headers=self._headers,
                    timeout=self._timeout,
                    raise_for_status=False,
                    allow_redirects=False,
                ) as response:
                    status, received = str(response.status), response.content
                    rate_limit = RateLimitInfo.from_headers(response.headers, now=self._clock())
                    yield response, rate_limit
        except BaseException as exc:
            status = status or _failure_label(exc)
            raise
        finally:
            if observer is not None:
                size = received.total_bytes if received is not None else 0
                seconds = time.perf_counter() - started
                observer.request_finished(host, endpoint, status or "error", seconds, size)

    async def _raise_for_status(
        self, response: aiohttp.ClientResponse, rate_limit: RateLimitInfo, context: _Context
    ) -> None:
        if not _is_success(response.status):
            body = await _read_prefix(response.content, _ERROR_BODY_BYTES)
            raise map_response_error(
                response.status, body, rate_limit, now=self._clock(), **context
            )


def _failure_label(exc: BaseException) -> str:
    """A request that got no answer, for metrics: ``timeout`` or the error's class."""
    if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
        return "timeout"
    return type(exc).__name__


def _is_success(status: int) -> bool:
    return 200 <= status < 300


def _json_object(data: bytes, status: int, context: _Context) -> dict[str, object]:
    document = _loads(data)
    if not isinstance(document, dict):
        raise XrpcError(
            f"HTTP {status} answer is not a JSON object",
            error="InvalidResponse",
            status=status,
            **context,
        )
    return document


def _absolute_url(url: str) -> URL:
    target = URL(url)
    if target.scheme not in ("http", "https") or not target.host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return target


def _xrpc_url(base_url: str, nsid: str, params: Mapping[str, ParamValue] | None) -> URL:
    base = _absolute_url(base_url.rstrip("/"))
    query: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            query.append((key, "true" if value else "false"))
        elif isinstance(value, str | int):
            query.append((key, str(value)))
        else:
            query.extend((key, item) for item in value)
    return base.with_path(f"{base.path.rstrip('/')}/xrpc/{nsid}").with_query(query)


def _host(url: URL) -> str | None:
    """``host`` or ``host:port``: hosts on one machine differ only by port."""
    if url.host is None:
        return None
    return (
        url.host if url.explicit_port is None or url.is_default_port() else f"{url.host}:{url.port}"
    )


def _context(url: URL, params: Mapping[str, ParamValue] | None) -> _Context:
    """Error context: the DID is the ``did`` parameter, or a ``repo`` one given as a DID."""
    did = None
    for key in ("did", "repo"):
        value = (params or {}).get(key)
        if isinstance(value, str) and value.startswith("did:"):
            did = value
            break
    return _Context(did=did, host=_host(url), url=str(url))
