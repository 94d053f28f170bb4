"""DID -> identity: the account's PDS endpoint, repo signing key and claimed handle.

:func:`parse_did_document` is pure. :class:`IdentityResolver` fetches documents (the PLC
directory for did:plc, ``/.well-known/did.json`` for did:web), caches answers through the
small :class:`IdentityCache` interface, and lets concurrent lookups of one DID share one
request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from bsky_backfill.atproto.crypto import PublicKey, parse_legacy_key, parse_public_key
from bsky_backfill.atproto.syntax import is_valid_handle, parse_did
from bsky_backfill.atproto.xrpc import XrpcClient
from bsky_backfill.errors import (
    DidNotFound,
    DidResolutionError,
    DidTombstoned,
    InvalidDid,
    InvalidDidDocument,
    PermanentError,
)

__all__ = [
    "CachedIdentity",
    "FailureKind",
    "Identity",
    "IdentityCache",
    "IdentityOptions",
    "IdentityResolver",
    "KeyKind",
    "MemoryIdentityCache",
    "SigningKey",
    "parse_did_document",
]

KeyKind = Literal["multikey", "legacy-k256", "legacy-p256"]
FailureKind = Literal["not_found", "tombstoned", "invalid_document"]

_PDS_FRAGMENT: Final = "#atproto_pds"
_PDS_TYPE: Final = "AtprotoPersonalDataServer"
_KEY_FRAGMENT: Final = "#atproto"
_KEY_KINDS: Final[dict[str, KeyKind]] = {
    "Multikey": "multikey",
    "EcdsaSecp256k1VerificationKey2019": "legacy-k256",
    "EcdsaSecp256r1VerificationKey2019": "legacy-p256",
}
_LEGACY_TYPES: Final = {kind: name for name, kind in _KEY_KINDS.items() if kind != "multikey"}
# base58btc multibase; the longest real key (an uncompressed legacy point) is ~90 chars.
_MULTIBASE: Final = re.compile(r"z[1-9A-HJ-NP-Za-km-z]{1,200}")
_PLC: Final = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB_HOST: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_FAILURES: Final[dict[FailureKind, type[DidResolutionError]]] = {
    "not_found": DidNotFound,
    "tombstoned": DidTombstoned,
    "invalid_document": InvalidDidDocument,
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The repo signing key as the document gives it: a Multikey (``zDn...``, ``zQ3s...``),
    or a legacy key type whose ``multibase`` is the bare point, with no multicodec prefix."""

    kind: KeyKind
    multibase: str

    def public_key(self) -> PublicKey:
        """Decode the key; raises ``InvalidKey`` if it is not a p256 / k256 point."""
        if self.kind == "multikey":
            return parse_public_key(self.multibase)
        return parse_legacy_key(_LEGACY_TYPES[self.kind], self.multibase)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a DID document says: PDS endpoint (no trailing slash), signing key and the
    handle it claims (lowercased; unverified: nothing checked that the handle points back)."""

    did: str
    pds: str
    signing_key: SigningKey
    handle: str | None


class _Problem(Exception):
    """What is wrong with a document; :func:`parse_did_document` makes it InvalidDidDocument."""


def parse_did_document(
    doc: object, did: str, *, host: str | None = None, url: str | None = None
) -> Identity:
    """The :class:`Identity` in a parsed DID document, which must be ``did``'s own.

    PDS: the first ``service`` with id ``#atproto_pds`` (relative, or prefixed by ``did``)
    and type ``AtprotoPersonalDataServer``, whose ``serviceEndpoint`` is an http(s) URL.
    Key: the first ``verificationMethod`` with id ``#atproto`` and type ``Multikey`` or a
    legacy ``EcdsaSecp256k1VerificationKey2019`` / ``EcdsaSecp256r1VerificationKey2019``,
    with a base58btc ``publicKeyMultibase`` (decoded later, by the verifier). Handle: the
    first ``at://`` entry of ``alsoKnownAs``, None if absent or not a valid handle.

    Raises ``InvalidDidDocument`` (with ``did``, ``host``, ``url``) naming the problem.
    """
    try:
        if not isinstance(doc, dict):
            raise _Problem(f"is a JSON {type(doc).__name__}, not an object")
        if doc.get("id") != did:
            raise _Problem(f"has id {_show(doc.get('id'))}, not the DID resolved")
        return Identity(did, _pds_endpoint(doc, did), _signing_key(doc, did), _handle(doc))
    except _Problem as problem:
        raise InvalidDidDocument(f"DID document {problem}", did=did, host=host, url=url) from None


def _entries(doc: dict[str, object], name: str, did: str, fragment: str) -> list[dict[str, object]]:
    """The objects in list ``doc[name]`` whose id is ``fragment`` or ``did + fragment``."""
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise _Problem(f"{name} is a JSON {type(value).__name__}, not a list")
    ids = (fragment, did + fragment)
    return [entry for entry in value if isinstance(entry, dict) and entry.get("id") in ids]


def _pds_endpoint(doc: dict[str, object], did: str) -> str:
    services = _entries(doc, "service", did, _PDS_FRAGMENT)
    if not services:
        raise _Problem(f"has no {_PDS_FRAGMENT} service")
    pds = next((s for s in services if s.get("type") == _PDS_TYPE), None)
    if pds is None:
        raise _Problem(
            f"{_PDS_FRAGMENT} service has type {_show(services[0].get('type'))}, not {_PDS_TYPE}"
        )
    return _http_endpoint(pds.get("serviceEndpoint"))


def _http_endpoint(value: object) -> str:
    """``scheme://host[:port][/path]`` lowercased up to the path, without a trailing slash."""
    if not isinstance(value, str) or not (value.isascii() and value.isprintable()) or " " in value:
        raise _Problem(f"PDS serviceEndpoint {_show(value)} is not a URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise _Problem(f"PDS serviceEndpoint {_show(value)} is not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Problem(f"PDS serviceEndpoint {_show(value)} is not an http(s) URL")
    if parts.username is not None or parts.query or parts.fragment:
        raise _Problem(f"PDS serviceEndpoint {_show(value)} has credentials, a query or a fragment")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _signing_key(doc: dict[str, object], did: str) -> SigningKey:
    methods = _entries(doc, "verificationMethod", did, _KEY_FRAGMENT)
    if not methods:
        raise _Problem(f"has no {_KEY_FRAGMENT} verification method")
    for method in methods:
        key_type = method.get("type")
        kind = _KEY_KINDS.get(key_type) if isinstance(key_type, str) else None
        if kind is not None:
            return SigningKey(kind, _multibase(method.get("publicKeyMultibase")))
    raise _Problem(
        f"{_KEY_FRAGMENT} key has unsupported type {_show(methods[0].get('type'))}; "
        f"expected one of {', '.join(_KEY_KINDS)}"
    )


def _multibase(value: object) -> str:
    if not isinstance(value, str) or not _MULTIBASE.fullmatch(value):
        raise _Problem(
            f"{_KEY_FRAGMENT} publicKeyMultibase {_show(value)} is not base58btc ('z...')"
        )
    return value


def _handle(doc: dict[str, object]) -> str | None:
    """The first ``at://`` alias; a malformed list or alias just means no handle, since the
    handle is informational and must not stop the repo from being fetched."""
    aliases = doc.get("alsoKnownAs")
    if not isinstance(aliases, list):
        return None
    uri = next((a for a in aliases if isinstance(a, str) and a.startswith("at://")), None)
    handle = uri.removeprefix("at://") if uri is not None else None
    return handle.lower() if handle is not None and is_valid_handle(handle) else None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- Cache ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedIdentity:
    """A cached answer for ``did`` until ``expires_at`` (unix seconds): an identity, or a
    permanent failure (``failure`` + ``message``) so a dead DID is not asked about again."""

    did: str
    expires_at: float
    identity: Identity | None = None
    failure: FailureKind | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if (self.identity is None) == (self.failure is None):
            raise ValueError("a CachedIdentity holds exactly one of identity and failure")


class IdentityCache(Protocol):
    """Where resolved identities are kept. The resolver decides what to keep and for how
    long (``expires_at``); a backend only stores. Methods may be called from the event loop,
    so a backend must be quick (in memory, or a local database)."""

    def get(self, did: str, now: float) -> CachedIdentity | None:
        """The entry for ``did`` unless missing or expired at ``now``."""
        ...

    def put(self, entry: CachedIdentity) -> None:
        """Store ``entry``, replacing any entry for its DID."""
        ...

    def expire(self, now: float) -> int:
        """Drop every entry expired at ``now``; return how many were dropped."""
        ...


class MemoryIdentityCache:
    """:class:`IdentityCache` in a dict; past ``max_entries`` the oldest stored entry goes."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: dict[str, CachedIdentity] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, did: str, now: float) -> CachedIdentity | None:
        entry = self._entries.get(did)
        if entry is not None and entry.expires_at <= now:
            del self._entries[did]
            return None
        return entry

    def put(self, entry: CachedIdentity) -> None:
        self._entries.pop(entry.did, None)  # re-inserting makes it the newest
        self._entries[entry.did] = entry
        if len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def expire(self, now: float) -> int:
        expired = [did for did, entry in self._entries.items() if entry.expires_at <= now]
        for did in expired:
            del self._entries[did]
        return len(expired)


# --- Resolver ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityOptions:
    """How DIDs are resolved and how long answers are kept (seconds).

    ``ttl`` for identities, ``negative_ttl`` for permanent failures (404, 410, a broken
    document); retryable failures are never kept. ``web_scheme="http"`` is for a did:web
    host on loopback in tests and the simulated network only.
    """

    plc_url: str = "https://plc.directory"
    ttl: float = 86_400.0
    negative_ttl: float = 3_600.0
    max_document_bytes: int = 256 * 1024
    web_scheme: Literal["https", "http"] = "https"


class _Target(NamedTuple):
    url: str
    host: str


@dataclass(slots=True)
class _Flight:
    """One in-flight lookup and how many callers are waiting for it."""

    task: asyncio.Task[Identity]
    waiters: int = field(default=0)


class IdentityResolver:
    """Resolves did:plc and did:web DIDs to :class:`Identity` through an :class:`XrpcClient`.

    Holds no resources of its own: the client (and its session) belong to the caller.
    """

    def __init__(
        self,
        client: XrpcClient,
        options: IdentityOptions | None = None,
        *,
        cache: IdentityCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._options = options or IdentityOptions()
        self._cache: IdentityCache = cache if cache is not None else MemoryIdentityCache()
        self._clock = clock
        self._plc_url = self._options.plc_url.rstrip("/")
        self._plc_host = urlsplit(self._plc_url).netloc
        self._in_flight: dict[str, _Flight] = {}

    async def resolve(self, did: str) -> Identity:
        """The identity of ``did``, from the cache or its DID document.

        Raises ``InvalidDid`` (bad syntax, no request made), ``DidResolutionError`` for a
        method other than plc / web or a did:web with a path, ``DidNotFound`` (404),
        ``DidTombstoned`` (410), ``InvalidDidDocument`` (another 4xx, not JSON, too large,
        unusable), ``RateLimited`` and ``HostUnavailable`` (never cached). Concurrent calls
        for one DID share one request; it is cancelled only when every caller is.
        """
        target = self._target(did)
        cached = self._cache.get(did, self._clock())
        if cached is not None:
            return _answer(cached)
        flight = self._in_flight.get(did)
        if flight is None:
            flight = self._start(did, target)
        flight.waiters += 1
        try:
            # shield: one caller's cancellation must not cancel the others' lookup.
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                self._abandon(did, flight)

    def _start(self, did: str, target: _Target) -> _Flight:
        flight = _Flight(asyncio.create_task(self._lookup(did, target), name=f"resolve {did}"))
        self._in_flight[did] = flight

        def forget(_: asyncio.Task[Identity]) -> None:
            if self._in_flight.get(did) is flight:
                del self._in_flight[did]

        flight.task.add_done_callback(forget)
        return flight

    def _abandon(self, did: str, flight: _Flight) -> None:
        """Every caller gave up: cancel the lookup, and forget it now so that a new caller
        starts afresh instead of joining a lookup that is being cancelled."""
        if self._in_flight.get(did) is flight:
            del self._in_flight[did]
        flight.task.cancel()

    def _target(self, did: str) -> _Target:
        """Where ``did``'s document lives; raises before any request if it cannot be fetched."""
        try:
            parse_did(did)
        except InvalidDid as error:
            raise InvalidDid("did", did, error.reason, did=did) from None
        if did.startswith("did:plc:"):
            if not _PLC.fullmatch(did):
                raise InvalidDid(
                    "did", did, "did:plc needs 24 base32 characters (a-z, 2-7)", did=did
                )
            return _Target(f"{self._plc_url}/{did}", self._plc_host)
        if did.startswith("did:web:"):
            host = _web_host(did)
            return _Target(f"{self._options.web_scheme}://{host}/.well-known/did.json", host)
        method = did.split(":")[1]
        raise DidResolutionError(
            f"DID method {method!r} is not supported (only plc and web)", did=did
        )

    async def _lookup(self, did: str, target: _Target) -> Identity:
        """Fetch and parse the document, caching the answer unless it may change on retry."""
        try:
            identity = await self._fetch(did, target)
        except (DidNotFound, DidTombstoned, InvalidDidDocument) as error:
            expires_at = self._clock() + self._options.negative_ttl
            self._cache.put(
                CachedIdentity(did, expires_at, failure=_failure_kind(error), message=error.message)
            )
            raise
        self._cache.put(CachedIdentity(did, self._clock() + self._options.ttl, identity=identity))
        return identity

    async def _fetch(self, did: str, target: _Target) -> Identity:
        context = {"did": did, "host": target.host, "url": target.url}
        try:
            response = await self._client.get_url(
                target.url, did=did, max_bytes=self._options.max_document_bytes
            )
        except PermanentError as error:  # too large, a redirect loop or a bad redirect
            raise InvalidDidDocument(
                f"DID document unreadable: {error.message}", **context
            ) from error
        if response.status == 404:
            raise DidNotFound("DID document not found (HTTP 404)", **context)
        if response.status == 410:
            raise DidTombstoned("DID is tombstoned (HTTP 410)", **context)
        if not 200 <= response.status < 300:
            raise InvalidDidDocument(
                f"DID document request answered HTTP {response.status}", **context
            )
        try:
            document = json.loads(response.body)
        except (ValueError, RecursionError):
            raise InvalidDidDocument("DID document is not JSON", **context) from None
        return parse_did_document(document, did, host=target.host, url=target.url)


def _web_host(did: str) -> str:
    """``host`` or ``host:port`` of a did:web (the spec percent-encodes the port colon)."""
    identifier = did.removeprefix("did:web:")
    if ":" in identifier:
        raise DidResolutionError("did:web with a path is not supported by atproto", did=did)
    host = identifier.replace("%3A", ":").replace("%3a", ":").lower()
    match = _WEB_HOST.fullmatch(host)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        raise InvalidDid(
            "did", did, "did:web needs a hostname, optionally with %3A and a port", did=did
        )
    return host


def _failure_kind(error: DidResolutionError) -> FailureKind:
    return next(kind for kind, cls in _FAILURES.items() if isinstance(error, cls))


def _answer(entry: CachedIdentity) -> Identity:
    """A cached identity, or the cached failure raised afresh."""
    if entry.identity is not None:
        return entry.identity
    assert entry.failure is not None  # CachedIdentity holds one or the other
    raise _FAILURES[entry.failure](entry.message, did=entry.did)
