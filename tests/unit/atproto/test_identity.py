"""DID documents and the resolver, against a fake PLC directory and did:web host served
by real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.atproto._multibase import b58encode
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.identity import (
    CachedIdentity,
    Identity,
    IdentityOptions,
    IdentityResolver,
    MemoryIdentityCache,
    SigningKey,
    parse_did_document,
)
from bsky_backfill.atproto.xrpc import XrpcClient, XrpcOptions
from bsky_backfill.errors import (
    DidNotFound,
    DidResolutionError,
    DidTombstoned,
    HostUnavailable,
    InvalidDid,
    InvalidDidDocument,
    InvalidKey,
    RateLimited,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
OTHER_DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
KEY = Keypair.from_seed("k256", "identity tests")
MULTIKEY = KEY.public_key.multikey


def document(did: str = DID, **changes: Any) -> dict[str, Any]:
    """A current-format DID document, as the PLC directory serves it."""
    doc: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "alsoKnownAs": ["at://Alice.Example.com"],
        "verificationMethod": [
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": MULTIKEY,
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://PDS.example.com/",
            }
        ],
    }
    doc.update(changes)
    return doc


# --- parse_did_document -------------------------------------------------------------------


def test_parses_a_current_document() -> None:
    identity = parse_did_document(document(), DID)
    assert identity == Identity(
        did=DID,
        pds="https://pds.example.com",
        signing_key=SigningKey("multikey", MULTIKEY),
        handle="alice.example.com",
    )
    assert identity.signing_key.public_key() == KEY.public_key


@pytest.mark.parametrize(
    ("key_type", "kind", "curve"),
    [
        ("EcdsaSecp256k1VerificationKey2019", "legacy-k256", "k256"),
        ("EcdsaSecp256r1VerificationKey2019", "legacy-p256", "p256"),
    ],
)
def test_parses_a_legacy_key(key_type: str, kind: str, curve: str) -> None:
    keypair = Keypair.from_seed(curve, "legacy")  # type: ignore[arg-type]
    bare_point = "z" + b58encode(keypair.public_key.point)
    method = {"id": "#atproto", "type": key_type, "publicKeyMultibase": bare_point}
    identity = parse_did_document(document(verificationMethod=[method]), DID)
    assert identity.signing_key == SigningKey(kind, bare_point)  # type: ignore[arg-type]
    assert identity.signing_key.public_key() == keypair.public_key


def test_an_undecodable_key_fails_only_when_decoded() -> None:
    identity = parse_did_document(_method(publicKeyMultibase="zQ3sh"), DID)
    with pytest.raises(InvalidKey):
        identity.signing_key.public_key()


def test_full_and_relative_ids_are_both_accepted() -> None:
    doc = document()
    doc["service"][0]["id"] = f"{DID}#atproto_pds"
    doc["verificationMethod"][0]["id"] = "#atproto"
    assert parse_did_document(doc, DID).pds == "https://pds.example.com"


def test_first_matching_entries_win_and_others_are_skipped() -> None:
    doc = document()
    doc["service"][:0] = [
        "not an object",
        {"id": "#bsky_fg", "type": "BskyFeedGenerator", "serviceEndpoint": "https://fg.example"},
        {"id": "#atproto_pds", "type": "Other", "serviceEndpoint": "https://wrong.example"},
    ]
    doc["service"].append(
        {
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": "https://second.example",
        }
    )
    doc["verificationMethod"].insert(
        0, {"id": "#atproto_label", "type": "Multikey", "publicKeyMultibase": "zOther"}
    )
    identity = parse_did_document(doc, DID)
    assert identity.pds == "https://pds.example.com"
    assert identity.signing_key.multibase == MULTIKEY


@pytest.mark.parametrize(
    ("endpoint", "normalized"),
    [
        ("https://pds.example.com", "https://pds.example.com"),
        ("HTTP://Pds.Example.com:8080/", "http://pds.example.com:8080"),
        ("https://example.com/pds/", "https://example.com/pds"),
        ("http://127.0.0.1:2583", "http://127.0.0.1:2583"),
    ],
)
def test_endpoint_normalization(endpoint: str, normalized: str) -> None:
    doc = document()
    doc["service"][0]["serviceEndpoint"] = endpoint
    assert parse_did_document(doc, DID).pds == normalized


@pytest.mark.parametrize(
    ("aliases", "handle"),
    [
        (["https://example.com", "at://Bob.Test", "at://carol.test"], "bob.test"),
        (["at://not a handle"], None),
        (["at://"], None),
        ([], None),
        ("at://bob.test", None),  # not a list: ignored, the handle is informational
        ([{"at": 1}], None),
    ],
)
def test_handle_is_the_first_at_alias(aliases: object, handle: str | None) -> None:
    assert parse_did_document(document(alsoKnownAs=aliases), DID).handle == handle


def test_handle_absent() -> None:
    doc = document()
    del doc["alsoKnownAs"]
    assert parse_did_document(doc, DID).handle is None


def _without(field: str) -> dict[str, Any]:
    doc = document()
    del doc[field]
    return doc


def _service(**changes: Any) -> dict[str, Any]:
    doc = document()
    doc["service"][0].update(changes)
    return doc


def _method(**changes: Any) -> dict[str, Any]:
    doc = document()
    doc["verificationMethod"][0].update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([document()], "JSON list, not an object"),
        (document(did=OTHER_DID), "has id 'did:plc:aaaa"),
        (_without("id"), "has id None"),
        (_without("service"), "no #atproto_pds service"),
        (document(service={"id": "#atproto_pds"}), "service is a JSON dict, not a list"),
        (_service(id=f"{OTHER_DID}#atproto_pds"), "no #atproto_pds service"),
        (_service(type="SomethingElse"), "type 'SomethingElse', not AtprotoPersonalDataServer"),
        (_service(serviceEndpoint="ftp://pds.example.com"), "is not an http(s) URL"),
        (_service(serviceEndpoint="pds.example.com"), "is not an http(s) URL"),
        (_service(serviceEndpoint="https://pds.example.com/?x=1"), "a query or a fragment"),
        (_service(serviceEndpoint="https://u:p@pds.example.com"), "credentials"),
        (_service(serviceEndpoint="https://pds.example.com:99999"), "is not a URL"),
        (_service(serviceEndpoint="https://[::1"), "is not a URL"),
        (_service(serviceEndpoint="https://pds.example.com/a b"), "is not a URL"),
        (_service(serviceEndpoint=["https://pds.example.com"]), "is not a URL"),
        (_without("verificationMethod"), "no #atproto verification method"),
        (_method(id=f"{OTHER_DID}#atproto"), "no #atproto verification method"),
        (_method(type="JsonWebKey2020"), "unsupported type 'JsonWebKey2020'"),
        (_method(type=["Multikey"]), "unsupported type ['Multikey']"),
        (_method(publicKeyMultibase="uAbc"), "is not base58btc"),
        (_method(publicKeyMultibase="z0OIl"), "is not base58btc"),
        (_method(publicKeyMultibase=None), "is not base58btc"),
    ],
)
def test_unusable_documents(doc: object, problem: str) -> None:
    with pytest.raises(InvalidDidDocument, match=r"^DID document ") as caught:
        parse_did_document(doc, DID, host="plc.example", url="https://plc.example/x")
    assert problem in caught.value.message
    assert (caught.value.did, caught.value.host, caught.value.url) == (
        DID,
        "plc.example",
        "https://plc.example/x",
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["id", "service", "verificationMethod", "alsoKnownAs"])


@given(st.dictionaries(FIELDS, JSON) | JSON)
def test_arbitrary_json_only_ever_raises_invalid_did_document(doc: object) -> None:
    with contextlib.suppress(InvalidDidDocument):
        parse_did_document(doc, DID)


@given(FIELDS, JSON)
def test_one_corrupted_field_never_raises_anything_else(field: str, value: object) -> None:
    doc = document()
    doc[field] = value
    with contextlib.suppress(InvalidDidDocument):
        parse_did_document(doc, DID)


# --- the cache ---------------------------------------------------------------------------


def _identity(did: str = DID) -> Identity:
    return Identity(did, "https://pds.example.com", SigningKey("multikey", MULTIKEY), None)


def test_memory_cache_get_put_expire() -> None:
    cache = MemoryIdentityCache()
    fresh = CachedIdentity(DID, expires_at=100.0, identity=_identity())
    gone = CachedIdentity(OTHER_DID, expires_at=50.0, failure="not_found", message="404")
    cache.put(fresh)
    cache.put(gone)
    assert cache.get(DID, now=99.0) == fresh
    assert cache.get(OTHER_DID, now=49.0) == gone
    assert cache.expire(now=60.0) == 1
    assert cache.get(OTHER_DID, now=0.0) is None
    assert cache.get(DID, now=100.0) is None  # expiry is exclusive and evicts
    assert len(cache) == 0


def test_memory_cache_drops_the_oldest_past_its_size() -> None:
    cache = MemoryIdentityCache(max_entries=2)
    dids = [f"did:plc:{c * 24}" for c in "abc"]
    for did in dids:
        cache.put(CachedIdentity(did, 100.0, identity=_identity(did)))
    assert [cache.get(did, 0.0) is not None for did in dids] == [False, True, True]


def test_cached_identity_holds_one_answer() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        CachedIdentity(DID, 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        CachedIdentity(DID, 1.0, identity=_identity(), failure="tombstoned")


# --- the resolver, against a fake PLC directory --------------------------------------------


class FakeDirectory:
    """A PLC directory (``GET /{did}``) and did:web host (``GET /.well-known/did.json``)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.requests: Counter[str] = Counter()
        self.delay = 0.0
        self.released = asyncio.Event()
        self.released.set()

    def serve(self, path: str, status: int = 200, body: object = None, **headers: str) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, data, headers)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        await self.released.wait()
        status, body, headers = self.answers.get(request.path, (404, b"not here", {}))
        return web.Response(status=status, body=body, headers=headers)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def directory() -> AsyncIterator[tuple[FakeDirectory, str]]:
    fake = FakeDirectory()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    fake.released.set()
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[XrpcClient]:
    async with XrpcClient.open(XrpcOptions(read_timeout=5, total_timeout=10)) as xrpc:
        yield xrpc


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., IdentityResolver]


@pytest.fixture
def make(directory: tuple[FakeDirectory, str], client: XrpcClient, clock: Clock) -> Make:
    def build(**options: Any) -> IdentityResolver:
        settings = {"plc_url": directory[1] + "/", "web_scheme": "http", **options}
        return IdentityResolver(client, IdentityOptions(**settings), clock=clock)

    return build


async def test_resolves_a_plc_did(directory: tuple[FakeDirectory, str], make: Make) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=document())
    identity = await make().resolve(DID)
    assert identity.pds == "https://pds.example.com"
    assert identity.handle == "alice.example.com"


async def test_resolves_a_web_did(directory: tuple[FakeDirectory, str], make: Make) -> None:
    fake, base = directory
    port = base.rsplit(":", 1)[1]
    did = f"did:web:127.0.0.1%3A{port}"
    fake.serve("/.well-known/did.json", body=document(did))
    identity = await make().resolve(did)
    assert identity.did == did
    assert fake.requests == {"/.well-known/did.json": 1}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (404, DidNotFound),
        (410, DidTombstoned),
        (400, InvalidDidDocument),
        (403, InvalidDidDocument),
    ],
)
async def test_permanent_answers(
    directory: tuple[FakeDirectory, str], make: Make, status: int, error_class: type[Exception]
) -> None:
    fake, base = directory
    fake.serve(f"/{DID}", status, {"message": "no"})
    with pytest.raises(error_class) as caught:
        await make().resolve(DID)
    assert isinstance(caught.value, DidResolutionError)
    assert caught.value.did == DID
    assert caught.value.url == f"{base}/{DID}"
    assert caught.value.host == base.removeprefix("http://")


@pytest.mark.parametrize(
    ("status", "error_class"), [(500, HostUnavailable), (503, HostUnavailable), (429, RateLimited)]
)
async def test_retryable_answers_are_not_cached(
    directory: tuple[FakeDirectory, str], make: Make, status: int, error_class: type[Exception]
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", status, b"busy", **{"Retry-After": "3"})
    resolver = make()
    for _ in range(2):
        with pytest.raises(error_class):
            await resolver.resolve(DID)
    assert fake.requests[f"/{DID}"] == 2
    fake.serve(f"/{DID}", body=document())
    assert (await resolver.resolve(DID)).did == DID


async def test_unreachable_directory_is_host_unavailable(client: XrpcClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = IdentityResolver(client, IdentityOptions(plc_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(HostUnavailable) as caught:
        await resolver.resolve(DID)
    assert caught.value.did == DID


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>", "not JSON"),
        (b"[" * 50_000, "not JSON"),
        (json.dumps(document(did=OTHER_DID)).encode(), "has id"),
        (json.dumps({"id": DID, "padding": "x" * 300_000}).encode(), "unreadable"),
    ],
)
async def test_bad_documents(
    directory: tuple[FakeDirectory, str], make: Make, body: bytes, problem: str
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=body)
    with pytest.raises(InvalidDidDocument, match=problem):
        await make().resolve(DID)


@pytest.mark.parametrize(
    "did",
    [
        "not a did",
        "did:plc:UPPERCASEUPPERCASEUPPERC",
        "did:plc:short",
        "did:web:bad_host.example",
        "did:web:example.com%3A99999",
        "did:web:example.com%2Fpath",
    ],
)
async def test_invalid_dids_make_no_request(
    directory: tuple[FakeDirectory, str], make: Make, did: str
) -> None:
    fake, _ = directory
    with pytest.raises(InvalidDid) as caught:
        await make().resolve(did)
    assert caught.value.did == did
    assert not fake.requests


@pytest.mark.parametrize(
    ("did", "problem"),
    [
        ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "method 'key'"),
        ("did:web:example.com:user:alice", "with a path"),
    ],
)
async def test_unsupported_dids_make_no_request(
    directory: tuple[FakeDirectory, str], make: Make, did: str, problem: str
) -> None:
    fake, _ = directory
    with pytest.raises(DidResolutionError, match=problem):
        await make().resolve(did)
    assert not fake.requests


async def test_identities_are_cached_until_their_ttl(
    directory: tuple[FakeDirectory, str], make: Make, clock: Clock
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=document())
    resolver = make(ttl=100.0)
    first = await resolver.resolve(DID)
    clock.now += 99
    assert await resolver.resolve(DID) is first
    assert fake.requests[f"/{DID}"] == 1
    clock.now += 1
    await resolver.resolve(DID)
    assert fake.requests[f"/{DID}"] == 2


@pytest.mark.parametrize(
    ("status", "error_class"), [(404, DidNotFound), (410, DidTombstoned), (400, InvalidDidDocument)]
)
async def test_permanent_failures_are_cached_for_the_negative_ttl(
    directory: tuple[FakeDirectory, str],
    make: Make,
    clock: Clock,
    status: int,
    error_class: type[Exception],
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", status, {"message": "gone"})
    resolver = make(negative_ttl=10.0)
    for _ in range(3):
        with pytest.raises(error_class) as caught:
            await resolver.resolve(DID)
        assert caught.value.did == DID  # type: ignore[attr-defined]
    assert fake.requests[f"/{DID}"] == 1
    clock.now += 10
    fake.serve(f"/{DID}", body=document())
    assert (await resolver.resolve(DID)).did == DID
    assert fake.requests[f"/{DID}"] == 2


async def test_an_injected_cache_is_used(
    directory: tuple[FakeDirectory, str], client: XrpcClient, clock: Clock
) -> None:
    fake, base = directory
    cache = MemoryIdentityCache()
    cache.put(CachedIdentity(DID, clock.now + 5, identity=_identity()))
    resolver = IdentityResolver(client, IdentityOptions(plc_url=base), cache=cache, clock=clock)
    assert await resolver.resolve(DID) == _identity()
    assert not fake.requests


async def test_concurrent_resolutions_share_one_request(
    directory: tuple[FakeDirectory, str], make: Make
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=document())
    fake.released.clear()
    resolver = make()
    tasks = [asyncio.create_task(resolver.resolve(DID)) for _ in range(10)]
    await asyncio.sleep(0.05)
    fake.released.set()
    identities = await asyncio.gather(*tasks)
    assert len({id(identity) for identity in identities}) == 1
    assert fake.requests[f"/{DID}"] == 1


async def test_concurrent_failures_are_shared_too(
    directory: tuple[FakeDirectory, str], make: Make
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", 503, b"down")
    fake.released.clear()
    resolver = make()
    tasks = [asyncio.create_task(resolver.resolve(DID)) for _ in range(5)]
    await asyncio.sleep(0.05)
    fake.released.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, HostUnavailable) for result in results)
    assert fake.requests[f"/{DID}"] == 1


async def test_one_cancelled_caller_does_not_cancel_the_others(
    directory: tuple[FakeDirectory, str], make: Make
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=document())
    fake.released.clear()
    resolver = make()
    quitter = asyncio.create_task(resolver.resolve(DID))
    stayer = asyncio.create_task(resolver.resolve(DID))
    await asyncio.sleep(0.05)
    quitter.cancel()
    await asyncio.sleep(0.05)
    fake.released.set()
    assert (await stayer).did == DID
    assert quitter.cancelled()
    assert fake.requests[f"/{DID}"] == 1


async def test_lookup_is_cancelled_when_every_caller_is(
    directory: tuple[FakeDirectory, str], make: Make
) -> None:
    fake, _ = directory
    fake.serve(f"/{DID}", body=document())
    fake.released.clear()
    resolver = make()
    callers = [asyncio.create_task(resolver.resolve(DID)) for _ in range(3)]
    await asyncio.sleep(0.05)
    for caller in callers:
        caller.cancel()
    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await caller
    # At once, while the abandoned lookup is still being cancelled: a new caller must start
    # a lookup of its own, not join the dying one (it would see CancelledError).
    fake.serve(f"/{DID}", 404, b"")
    fake.released.set()
    with pytest.raises(DidNotFound):
        await resolver.resolve(DID)
    assert fake.requests[f"/{DID}"] == 2


def test_documents_are_not_shared_mutable_state() -> None:
    doc = document()
    before = copy.deepcopy(doc)
    parse_did_document(doc, DID)
    assert doc == before
