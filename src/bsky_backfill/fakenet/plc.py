"""DID documents of the simulated accounts and the PLC directory that serves them.

A document names the account's current host as ``#atproto_pds`` and its signing key as
``#atproto``: a Multikey, or for ``legacy_key_share`` of the accounts the older form
(``EcdsaSecp256k1VerificationKey2019`` / ``EcdsaSecp256r1VerificationKey2019`` with the
bare uncompressed point, as early did:plc documents carry). did:web accounts are unknown
to the directory; their host serves their document at ``/.well-known/did.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bsky_backfill.atproto._multibase import b58encode
from bsky_backfill.atproto.crypto import PublicKey
from bsky_backfill.fakenet.http import Reply, RequestInfo, json_reply
from bsky_backfill.fakenet.world import Account, World

__all__ = ["PlcDirectory", "did_document", "uses_legacy_key"]

_DID_CONTEXT: Final = "https://www.w3.org/ns/did/v1"
_MULTIKEY_CONTEXT: Final = "https://w3id.org/security/multikey/v1"
_LEGACY: Final = {
    "k256": (
        "EcdsaSecp256k1VerificationKey2019",
        "https://w3id.org/security/suites/secp256k1-2019/v1",
    ),
    "p256": (
        "EcdsaSecp256r1VerificationKey2019",
        "https://w3id.org/security/suites/secp256r1-2019/v1",
    ),
}
_GONE: Final = frozenset({"tombstoned"})


def uses_legacy_key(account: Account, share: float) -> bool:
    """Whether the account's document uses the legacy key form (a pure function of the
    population seed and the account, so runs with one seed agree)."""
    digest = hashlib.sha256(f"legacy-key-{account.seed.spec.seed}-{account.seed.index}".encode())
    return int.from_bytes(digest.digest()[:6], "big") / 2**48 < share


def did_document(
    account: Account, public: PublicKey, host_url: str, *, legacy: bool
) -> dict[str, Any]:
    """The account's DID document as the PLC directory (or its did:web host) serves it,
    with ``public`` (the account's key) as its ``#atproto`` key."""
    did = account.did
    if legacy:
        key_type, context = _LEGACY[public.curve]
        point = public.key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        method = {"type": key_type, "publicKeyMultibase": "z" + b58encode(point)}
    else:
        context = _MULTIKEY_CONTEXT
        method = {"type": "Multikey", "publicKeyMultibase": public.multikey}
    return {
        "@context": [_DID_CONTEXT, context],
        "id": did,
        "alsoKnownAs": [f"at://{account.seed.handle}"],
        "verificationMethod": [{"id": f"{did}#atproto", "controller": did, **method}],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": host_url,
            }
        ],
    }


class PlcDirectory:
    """Answers ``GET /{did}`` for did:plc accounts and ``/.well-known/did.json`` for each
    host's did:web account. ``host_urls[i]`` is host ``i``'s base URL, ``web_names[i]`` its
    did:web name (``127.0.0.1%3Aport``). Keys are derived in ``executor`` (about 1 ms of
    CPU each, too long for the event loop) and kept, one public key per account asked for.
    """

    def __init__(
        self,
        world: World,
        host_urls: Sequence[str],
        web_names: Sequence[str],
        legacy_key_share: float,
        executor: Executor,
    ) -> None:
        self._world = world
        self._host_urls = host_urls
        self._web_names = web_names
        self._legacy_share = legacy_key_share
        self._executor = executor
        self._keys: dict[int, PublicKey] = {}

    async def document(self, account: Account) -> dict[str, Any]:
        """The account's current document (its host may have changed)."""
        public = self._keys.get(account.seed.index)
        if public is None:
            seed = account.seed
            loop = asyncio.get_running_loop()
            public = await loop.run_in_executor(self._executor, lambda: seed.keypair.public_key)
            self._keys[seed.index] = public
        legacy = uses_legacy_key(account, self._legacy_share)
        return did_document(account, public, self._host_urls[account.host], legacy=legacy)

    async def resolve(self, info: RequestInfo) -> Reply:
        """``GET /{did}``: the document, 404 for a DID it does not hold (any did:web), 410
        for a tombstoned one — the PLC directory's answers and messages."""
        did = info.path.lstrip("/")
        account = self._world.get(did) if did.startswith("did:plc:") else None
        if account is None:
            return json_reply({"message": f"DID not registered: {did}"}, 404)
        if account.status in _GONE:
            return json_reply({"message": f"DID not available: {did}"}, 410)
        return json_reply(await self.document(account))

    async def web_document(self, host: int) -> Reply:
        """Host ``host``'s ``/.well-known/did.json``: its did:web account's document."""
        account = self._world.get(f"did:web:{self._web_names[host]}")
        if account is None or account.status in _GONE:
            return Reply(404, b"Not Found", content_type="text/plain; charset=utf-8")
        return json_reply(await self.document(account))
