"""AT Protocol signing keys and ECDSA signatures on P-256 (``p256``) and secp256k1 (``k256``).

A key travels as ``did:key:z...`` or a bare Multikey ``z...``: base58btc of a multicodec
varint (p256-pub 0x1200 -> ``zDn...``, secp256k1-pub 0xe7 -> ``zQ3s...``) then a SEC1 point.
A signature is 64 bytes ``r || s`` over SHA-256 of the data, and only its low-S form is
valid: atproto wants exactly one valid encoding per signature, which plain ECDSA does not
give (``(r, n - s)`` verifies too).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bsky_backfill.atproto._multibase import b58decode, b58encode
from bsky_backfill.errors import InvalidKey

__all__ = [
    "Curve",
    "Keypair",
    "PublicKey",
    "parse_legacy_key",
    "parse_public_key",
    "verify_signature",
]

Curve = Literal["p256", "k256"]


class _CurveSpec(NamedTuple):
    ec_curve: ec.EllipticCurve
    order: int  # n: r and s must lie in [1, n - 1], and low-S means s <= n // 2
    prefix: bytes  # the multicodec as an unsigned varint, as it starts a Multikey
    legacy_type: str  # the pre-Multikey DID document verification method type


_SPECS: Final[dict[Curve, _CurveSpec]] = {
    "p256": _CurveSpec(
        ec.SECP256R1(),
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        b"\x80\x24",  # p256-pub, 0x1200
        "EcdsaSecp256r1VerificationKey2019",
    ),
    "k256": _CurveSpec(
        ec.SECP256K1(),
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
        b"\xe7\x01",  # secp256k1-pub, 0xe7
        "EcdsaSecp256k1VerificationKey2019",
    ),
}
_BY_LEGACY_TYPE: Final = {spec.legacy_type: curve for curve, spec in _SPECS.items()}

_DID_KEY = "did:key:"
# A prefixed uncompressed point is 67 bytes, about 92 base58 characters. Key strings come
# from DID documents anyone can publish, and base58 decoding is quadratic: bound it first.
_MAX_MULTIBASE_CHARS = 128
_ECDSA_VERIFY: Final = ec.ECDSA(hashes.SHA256())
# RFC 6979 nonces, so a seeded test network signs the same commit identically every run.
_ECDSA_SIGN: Final = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@functools.lru_cache(maxsize=4096)
def _k256_public(point: bytes) -> coincurve.PublicKey:
    return coincurve.PublicKey(point)


class _Problem(Exception):
    """Why key bytes or text cannot be decoded; each public entry point turns it into
    ``InvalidKey`` naming its own input."""


@dataclass(frozen=True, repr=False)
class PublicKey:
    """A validated public signing key: its curve and its 33-byte compressed SEC1 point.

    Obtain one from :func:`parse_public_key`, :func:`parse_legacy_key` or
    :attr:`Keypair.public_key`; the constructor trusts that ``key`` is ``point`` on ``curve``.
    Immutable, hashable (by curve and point) and picklable.
    """

    curve: Curve
    point: bytes
    key: ec.EllipticCurvePublicKey = field(compare=False)

    @property
    def multikey(self) -> str:
        """The bare Multikey form, ``z`` + base58btc(multicodec varint + compressed point)."""
        return "z" + b58encode(_SPECS[self.curve].prefix + self.point)

    @property
    def did_key(self) -> str:
        """The ``did:key:z...`` form (always the compressed point, whatever was parsed)."""
        return _DID_KEY + self.multikey

    def verify(self, data: bytes, sig: bytes) -> bool:
        """True iff ``sig`` is a 64-byte low-S ``r || s`` signature of sha256(``data``).

        Never raises for a bad signature: wrong length, ``r`` or ``s`` out of ``[1, n - 1]``,
        high-S (``s > n / 2``) and a mismatch all return False.
        """
        if len(sig) != 64:
            return False
        order = _SPECS[self.curve].order
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        # OpenSSL would accept the high-S twin (r, n - s); atproto must not.
        if not (0 < r < order and 0 < s <= order // 2):
            return False
        der = encode_dss_signature(r, s)
        if self.curve == "k256":
            # libsecp256k1 (coincurve) verifies ~15x faster than OpenSSL's generic curve
            # code (80 us vs 1.2 ms measured here), and most accounts use k256 keys.
            return _k256_public(self.point).verify(der, data, hasher=_sha256)
        try:
            self.key.verify(der, data, _ECDSA_VERIFY)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKey({self.did_key!r})"

    def __reduce__(self) -> tuple[Callable[[Curve, bytes], PublicKey], tuple[Curve, bytes]]:
        # The cryptography key object cannot be pickled; rebuild it from the point, so a
        # PublicKey can cross into a process pool.
        return _from_point, (self.curve, self.point)


@functools.lru_cache(maxsize=4096)
def parse_public_key(key: str) -> PublicKey:
    """Decode a ``did:key:z...`` or bare Multikey ``z...`` p256 / k256 key (compressed or
    uncompressed point).

    Raises ``InvalidKey`` saying what is wrong: not a did:key or not base58btc, a bad base58
    character, an unknown multicodec, a wrong point length, or a point not on the curve.
    Results are cached by string: one key verifies many commits.
    """
    try:
        if key.startswith("did:") and not key.startswith(_DID_KEY):
            raise _Problem("a DID that is not a did:key")
        raw = _decode_base58btc(key.removeprefix(_DID_KEY))
        for curve, spec in _SPECS.items():
            if raw.startswith(spec.prefix):
                return _from_point(curve, raw[len(spec.prefix) :])
        raise _Problem(
            f"unknown multicodec {_describe_codec(raw)}; "
            "expected p256-pub (0x1200) or secp256k1-pub (0xe7)"
        )
    except _Problem as problem:
        raise _invalid_key(key, problem) from None


@functools.lru_cache(maxsize=1024)
def parse_legacy_key(key_type: str, public_key_multibase: str) -> PublicKey:
    """Decode a legacy DID document key: ``EcdsaSecp256r1VerificationKey2019`` or
    ``EcdsaSecp256k1VerificationKey2019`` with a ``publicKeyMultibase`` that is base58btc of
    the bare point, with no multicodec prefix (compressed, or 65-byte uncompressed as in
    early did:plc documents).

    Raises ``InvalidKey`` for another type or an undecodable value. Cached like
    :func:`parse_public_key`.
    """
    try:
        curve = _BY_LEGACY_TYPE.get(key_type)
        if curve is None:
            raise _Problem(
                f"unsupported verification method type {key_type!r}; expected one of "
                + ", ".join(sorted(_BY_LEGACY_TYPE))
            )
        return _from_point(curve, _decode_base58btc(public_key_multibase))
    except _Problem as problem:
        raise _invalid_key(public_key_multibase, problem) from None


def verify_signature(key: str, data: bytes, sig: bytes) -> bool:
    """True iff ``sig`` (64-byte low-S ``r || s``) signs sha256(``data``) under ``key``.

    ``key`` is a did:key or bare Multikey. Returns False for any bad signature; raises
    ``InvalidKey`` only when ``key`` itself cannot be decoded.
    """
    return parse_public_key(key).verify(data, sig)


@dataclass(frozen=True, eq=False)
class Keypair:
    """A private signing key, for the simulated network and tests.

    Build with :meth:`generate`, :meth:`from_private_bytes` or :meth:`from_seed`; the
    ``repr`` never shows the secret. Signing is deterministic (RFC 6979). secp256k1 keys
    use libsecp256k1 (coincurve): deriving and signing cost ~0.2 ms instead of ~3 ms
    through OpenSSL, which matters when a simulated network builds thousands of repos.
    """

    curve: Curve
    secret: bytes = field(repr=False)
    public_key: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        spec = _spec(self.curve)
        if len(self.secret) != 32 or not 0 < int.from_bytes(self.secret, "big") < spec.order:
            raise ValueError(f"a {self.curve} private key is 32 bytes encoding 1 <= d < n")
        if self.curve == "k256":
            point = coincurve.PrivateKey(self.secret).public_key.format(compressed=True)
            public = _from_point("k256", point)
        else:
            key = self._p256_key.public_key()
            point = key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
            public = PublicKey(self.curve, point, key)
        object.__setattr__(self, "public_key", public)

    @functools.cached_property
    def _p256_key(self) -> ec.EllipticCurvePrivateKey:
        # cached_property writes the instance __dict__ directly, so frozen is no obstacle.
        return ec.derive_private_key(int.from_bytes(self.secret, "big"), ec.SECP256R1())

    @classmethod
    def generate(cls, curve: Curve) -> Keypair:
        """A fresh random key on ``curve``."""
        order = _spec(curve).order
        while True:
            secret = os.urandom(32)
            if 0 < int.from_bytes(secret, "big") < order:
                return cls(curve, secret)

    @classmethod
    def from_private_bytes(cls, curve: Curve, secret: bytes) -> Keypair:
        """The key whose 32-byte big-endian scalar is ``secret``; ``ValueError`` unless it is
        32 bytes in ``[1, n - 1]``."""
        _spec(curve)
        return cls(curve, bytes(secret))

    @classmethod
    def from_seed(cls, curve: Curve, seed: str | bytes) -> Keypair:
        """The same key for the same ``(curve, seed)`` on every run (reproducible test
        networks). Not for real keys: a guessable seed gives a guessable key."""
        spec = _spec(curve)
        seed_bytes = seed.encode() if isinstance(seed, str) else seed
        digest = hashlib.sha256(b"bsky-backfill keypair/" + curve.encode() + b"/" + seed_bytes)
        # Reducing into [1, n - 1] is biased by under 2**-127: irrelevant for test keys.
        scalar = int.from_bytes(digest.digest(), "big") % (spec.order - 1) + 1
        return cls(curve, scalar.to_bytes(32, "big"))

    @property
    def private_bytes(self) -> bytes:
        """The 32-byte big-endian private scalar, as :meth:`from_private_bytes` takes it."""
        return self.secret

    @property
    def did_key(self) -> str:
        """The public key as ``did:key:z...``."""
        return self.public_key.did_key

    def sign(self, data: bytes) -> bytes:
        """Sign sha256(``data``): 64 bytes ``r || s``, always low-S."""
        if self.curve == "k256":
            der = _k256_private(self.secret).sign(data, hasher=_sha256)
        else:
            der = self._p256_key.sign(data, _ECDSA_SIGN)
        r, s = decode_dss_signature(der)
        order = _SPECS[self.curve].order
        if s > order // 2:
            s = order - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@functools.lru_cache(maxsize=4096)
def _k256_private(secret: bytes) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(secret)


def _spec(curve: Curve) -> _CurveSpec:
    # ``Curve`` binds type checkers only: a caller may still pass any string.
    if curve not in _SPECS:
        raise ValueError(f"unknown curve {curve!r}; expected 'p256' or 'k256'")
    return _SPECS[curve]


def _from_point(curve: Curve, point: bytes) -> PublicKey:
    """Validate a SEC1 point (33 bytes compressed or 65 uncompressed) on ``curve``."""
    if len(point) not in (33, 65):
        raise _Problem(
            f"wrong point length {len(point)} for {curve}: expected 33 (compressed) "
            "or 65 (uncompressed)"
        )
    if point[0] not in ((2, 3) if len(point) == 33 else (4,)):
        raise _Problem(f"bad SEC1 tag 0x{point[0]:02x} for a {len(point)}-byte point")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(_SPECS[curve].ec_curve, point)
    except ValueError:
        raise _Problem(f"point is not on the {curve} curve") from None
    return PublicKey(curve, key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint), key)


def _decode_base58btc(text: str) -> bytes:
    if len(text) > _MAX_MULTIBASE_CHARS:
        raise _Problem(f"{len(text)} characters is too long for a key")
    if not text.startswith("z"):
        raise _Problem("not base58btc multibase (must start with 'z')")
    try:
        return b58decode(text[1:])
    except ValueError as error:
        raise _Problem(f"bad base58: {error}") from None


def _describe_codec(raw: bytes) -> str:
    """The multicodec varint at the start of ``raw``, as hex, for an error message."""
    value = 0
    for i, byte in enumerate(raw[:9]):  # multiformats caps a varint at 9 bytes
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return f"0x{value:x}"
    return "(missing or truncated varint)"


def _invalid_key(text: str, problem: _Problem) -> InvalidKey:
    shown = repr(text) if len(text) <= 120 else repr(text[:117] + "...")
    return InvalidKey(f"invalid key {shown}: {problem}")
