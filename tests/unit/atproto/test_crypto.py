"""Keys, did:key / Multikey / legacy forms, low-S ECDSA signatures and base58btc."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bsky_backfill.atproto import crypto
from bsky_backfill.atproto._multibase import b58decode, b58encode
from bsky_backfill.atproto.crypto import (
    Curve,
    Keypair,
    PublicKey,
    parse_legacy_key,
    parse_public_key,
    verify_signature,
)
from bsky_backfill.errors import InvalidKey

# data/ holds crypto/*.json from bluesky-social/atproto-interop-tests (CC0 1.0, commit 056e574).
DATA = Path(__file__).parent / "data"
CURVES: tuple[Curve, ...] = ("p256", "k256")
ORDER = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "k256": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
PREFIX = {"p256": b"\x80\x24", "k256": b"\xe7\x01"}
EC_CURVE = {"p256": ec.SECP256R1(), "k256": ec.SECP256K1()}
LEGACY_TYPE = {
    "p256": "EcdsaSecp256r1VerificationKey2019",
    "k256": "EcdsaSecp256k1VerificationKey2019",
}
# A legacy uncompressed k256 key from an early did:plc document; indigo and the atproto
# TypeScript resolver tests use the same one.
LEGACY_UNCOMPRESSED_K256 = (
    "zQYEBzXeuTM9UR3rfvNag6L3RNAs5pQZyYPsomTsgQhsxLdEgCrPTLgFna8yqCnxPpNT7DBk6Ym3dgPKNu86vt9GR"
)
LEGACY_UNCOMPRESSED_K256_DID = "did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"


def _load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((DATA / name).read_text())
    return vectors


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _split(sig: bytes) -> tuple[int, int]:
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def _join(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _plain_ecdsa_accepts(key: PublicKey, data: bytes, r: int, s: int) -> bool:
    """What OpenSSL alone says, without atproto's rules."""
    try:
        key.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _uncompressed(key: PublicKey) -> bytes:
    return key.key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _x_off_curve(curve: str) -> bytes:
    """A compressed point whose x has no y on the curve."""
    for x in range(1, 100):
        point = b"\x02" + x.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(EC_CURVE[curve], point)
        except ValueError:
            return point
    raise AssertionError("no off-curve x below 100")


@pytest.fixture(params=CURVES)
def keypair(request: pytest.FixtureRequest) -> Keypair:
    return Keypair.from_seed(request.param, "test")


# --- interop vectors ---------------------------------------------------------------------

SIGNATURE_VECTORS = _load("signature-fixtures.json")


@pytest.mark.parametrize("vector", SIGNATURE_VECTORS, ids=[v["comment"] for v in SIGNATURE_VECTORS])
def test_signature_fixture(vector: dict[str, Any]) -> None:
    data, sig = _b64(vector["messageBase64"]), _b64(vector["signatureBase64"])
    did_key = vector["publicKeyDid"]
    multikey = did_key.removeprefix("did:key:")

    assert verify_signature(did_key, data, sig) is vector["validSignature"]
    assert verify_signature(multikey, data, sig) is vector["validSignature"]
    legacy = parse_legacy_key(vector["didDocSuite"], vector["publicKeyMultibase"])
    assert legacy == parse_public_key(did_key)
    assert legacy.verify(data, sig) is vector["validSignature"]
    assert legacy.did_key == did_key
    assert legacy.curve == {"ES256": "p256", "ES256K": "k256"}[vector["algorithm"]]


@pytest.mark.parametrize(
    "vector",
    [v for v in SIGNATURE_VECTORS if v["tags"]],
    ids=lambda v: v["comment"],
)
def test_rejected_fixtures_are_real_ecdsa_signatures(vector: dict[str, Any]) -> None:
    """The invalid vectors fail on atproto's rules alone: plain ECDSA accepts them."""
    key = parse_public_key(vector["publicKeyDid"])
    data, sig = _b64(vector["messageBase64"]), _b64(vector["signatureBase64"])
    if "der-encoded" in vector["tags"]:
        key.key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert vector["tags"] == ["high-s"]
        r, s = _split(sig)
        assert s > ORDER[key.curve] // 2
        assert _plain_ecdsa_accepts(key, data, r, s)
        assert key.verify(data, _join(r, ORDER[key.curve] - s))


@pytest.mark.parametrize(
    ("curve", "vector"),
    [("k256", v) for v in _load("w3c_didkey_K256.json")]
    + [("p256", v) for v in _load("w3c_didkey_P256.json")],
)
def test_w3c_did_key_vector(curve: Curve, vector: dict[str, Any]) -> None:
    if "privateKeyBytesHex" in vector:
        secret = bytes.fromhex(vector["privateKeyBytesHex"])
    else:
        secret = b58decode(vector["privateKeyBytesBase58"])
    keypair = Keypair.from_private_bytes(curve, secret)
    assert keypair.did_key == vector["publicDidKey"]
    assert parse_public_key(vector["publicDidKey"]) == keypair.public_key


def test_real_legacy_uncompressed_key() -> None:
    key = parse_legacy_key("EcdsaSecp256k1VerificationKey2019", LEGACY_UNCOMPRESSED_K256)
    assert key.did_key == LEGACY_UNCOMPRESSED_K256_DID
    assert len(key.point) == 33


# --- generated keys -----------------------------------------------------------------------


def test_sign_verify_round_trip(keypair: Keypair) -> None:
    sig = keypair.sign(b"commit bytes")
    assert len(sig) == 64
    assert keypair.public_key.verify(b"commit bytes", sig)
    assert verify_signature(keypair.did_key, b"commit bytes", sig)
    assert verify_signature(keypair.public_key.multikey, b"commit bytes", sig)


def test_key_string_forms(keypair: Keypair) -> None:
    key = keypair.public_key
    assert key.multikey.startswith({"p256": "zDn", "k256": "zQ3s"}[keypair.curve])
    assert key.did_key == "did:key:" + key.multikey
    assert parse_public_key(key.did_key) == key
    assert parse_public_key(key.multikey) == key


def test_generate_gives_distinct_working_keys(keypair: Keypair) -> None:
    first, second = Keypair.generate(keypair.curve), Keypair.generate(keypair.curve)
    assert first.public_key != second.public_key
    assert first.public_key.verify(b"x", first.sign(b"x"))
    assert not second.public_key.verify(b"x", first.sign(b"x"))


def test_high_s_twin_is_rejected(keypair: Keypair) -> None:
    key, order = keypair.public_key, ORDER[keypair.curve]
    r, s = _split(keypair.sign(b"data"))
    assert s <= order // 2
    assert _plain_ecdsa_accepts(key, b"data", r, order - s)
    assert not key.verify(b"data", _join(r, order - s))


def test_sign_always_low_s_and_deterministic(keypair: Keypair) -> None:
    # RFC 6979 nonces give high-S about half the time, so 64 messages exercise the flip.
    order = ORDER[keypair.curve]
    for i in range(64):
        data = i.to_bytes(2, "big")
        sig = keypair.sign(data)
        assert _split(sig)[1] <= order // 2
        assert keypair.sign(data) == sig
        assert keypair.public_key.verify(data, sig)


def test_bad_signatures_are_false(keypair: Keypair) -> None:
    key, order = keypair.public_key, ORDER[keypair.curve]
    sig = keypair.sign(b"data")
    r, s = _split(sig)
    other_curve: Curve = "k256" if keypair.curve == "p256" else "p256"
    assert not key.verify(b"datA", sig)
    assert not Keypair.from_seed(keypair.curve, "other").public_key.verify(b"data", sig)
    assert not Keypair.from_seed(other_curve, "test").public_key.verify(b"data", sig)
    for bad in (
        sig[:63],
        sig + b"\0",
        b"",
        bytes(64),
        _join(0, s),
        _join(r, 0),
        _join(order, s),
        _join(r, order),
        b"\xff" * 64,
    ):
        assert not key.verify(b"data", bad)


def test_uncompressed_did_key_is_accepted(keypair: Keypair) -> None:
    key = keypair.public_key
    multikey = "z" + b58encode(PREFIX[key.curve] + _uncompressed(key))
    parsed = parse_public_key("did:key:" + multikey)
    assert parsed == key
    assert parsed.did_key == key.did_key  # rendered back compressed


def test_legacy_forms(keypair: Keypair) -> None:
    key = keypair.public_key
    legacy_type = LEGACY_TYPE[key.curve]
    assert parse_legacy_key(legacy_type, "z" + b58encode(_uncompressed(key))) == key
    assert parse_legacy_key(legacy_type, "z" + b58encode(key.point)) == key


# --- invalid keys -------------------------------------------------------------------------

P256_DID = "did:key:zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with 'z'"),
        ("did:key:", "must start with 'z'"),
        ("uAAAA", "must start with 'z'"),
        ("did:key:fDnaembg", "must start with 'z'"),
        ("did:web:example.com", "not a did:key"),
        ("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "not a did:key"),
        (P256_DID.replace("zDna", "zDn0"), "bad base58: invalid base58 character '0'"),
        ("zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQl", "invalid base58 character 'l'"),
        # ed25519-pub: a valid did:key, but not an atproto signing key
        ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "unknown multicodec 0xed"),
        ("z", "missing or truncated varint"),
        ("z" + b58encode(PREFIX["p256"] + bytes(32)), "wrong point length 32 for p256"),
        ("z" + b58encode(PREFIX["k256"] + b"\x02" + bytes(33)), "wrong point length 34 for k256"),
        ("z" + b58encode(PREFIX["k256"] + b"\x05" + bytes(32)), "bad SEC1 tag 0x05"),
        ("z" + b58encode(PREFIX["p256"] + b"\x02" + bytes(64)), "bad SEC1 tag 0x02"),
        ("z" + b58encode(PREFIX["p256"] + _x_off_curve("p256")), "not on the p256 curve"),
        ("z" + b58encode(PREFIX["k256"] + _x_off_curve("k256")), "not on the k256 curve"),
        ("z" + b58encode(PREFIX["p256"] + b"\x04" + bytes(64)), "not on the p256 curve"),
        ("z" + "2" * 200, "too long"),
    ],
)
def test_invalid_key_strings(text: str, message: str) -> None:
    with pytest.raises(InvalidKey, match=message) as caught:
        parse_public_key(text)
    assert caught.value.message.startswith("invalid key ")
    with pytest.raises(InvalidKey, match=message):
        verify_signature(text, b"data", bytes(64))


def test_point_not_on_curve_uncompressed(keypair: Keypair) -> None:
    point = bytearray(_uncompressed(keypair.public_key))
    point[-1] ^= 1  # a different y for the same x
    with pytest.raises(InvalidKey, match=f"not on the {keypair.curve} curve"):
        parse_public_key("z" + b58encode(PREFIX[keypair.curve] + bytes(point)))


def test_invalid_legacy_keys(keypair: Keypair) -> None:
    key = keypair.public_key
    with pytest.raises(InvalidKey, match="unsupported verification method type 'Multikey'"):
        parse_legacy_key("Multikey", key.multikey)
    # the legacy form is the bare point: a multicodec prefix makes the length wrong
    with pytest.raises(InvalidKey, match="wrong point length 35"):
        parse_legacy_key(LEGACY_TYPE[key.curve], key.multikey)
    with pytest.raises(InvalidKey, match="must start with 'z'"):
        parse_legacy_key(LEGACY_TYPE[key.curve], key.did_key)


def test_invalid_key_is_a_permanent_value_error() -> None:
    with pytest.raises(ValueError, match="invalid key"):
        parse_public_key("nope")


# --- PublicKey and Keypair objects --------------------------------------------------------


def test_public_key_value_semantics(keypair: Keypair) -> None:
    key = keypair.public_key
    same = parse_public_key(key.did_key)
    assert same == key
    assert hash(same) == hash(key)
    assert repr(key) == f"PublicKey({key.did_key!r})"
    assert pickle.loads(pickle.dumps(key)) == key
    assert pickle.loads(pickle.dumps(key)).verify(b"x", keypair.sign(b"x"))
    with pytest.raises(AttributeError):
        key.curve = "p256"  # type: ignore[misc]


def test_parse_is_cached() -> None:
    assert parse_public_key(P256_DID) is parse_public_key(P256_DID)


def test_keypair_from_seed_is_reproducible() -> None:
    assert Keypair.from_seed("k256", "alice").did_key == Keypair.from_seed("k256", b"alice").did_key
    assert Keypair.from_seed("k256", "alice").did_key != Keypair.from_seed("k256", "bob").did_key
    assert Keypair.from_seed("p256", "alice").did_key.startswith("did:key:zDn")


def test_keypair_private_bytes_round_trip(keypair: Keypair) -> None:
    secret = keypair.private_bytes
    assert len(secret) == 32
    again = Keypair.from_private_bytes(keypair.curve, secret)
    assert again.public_key == keypair.public_key
    assert secret.hex() not in repr(keypair)
    assert str(int.from_bytes(secret, "big")) not in repr(keypair)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize(
    "secret",
    [bytes(32), bytes(31) + b"\x01" + b"\x00", b"\x01" * 31, b"\xff" * 32],
    ids=["zero", "33-bytes", "31-bytes", "above-order"],
)
def test_keypair_rejects_bad_secret(curve: Curve, secret: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes encoding 1 <= d < n"):
        Keypair.from_private_bytes(curve, secret)


def test_keypair_rejects_unknown_or_mismatched_curve() -> None:
    with pytest.raises(ValueError, match="unknown curve 'ed25519'"):
        Keypair.generate("ed25519")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes encoding"):
        Keypair("p256", b"\x00" * 32)


def test_all_names_the_public_surface() -> None:
    defined_here = {
        name
        for name, value in vars(crypto).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == crypto.__name__
    }
    assert defined_here | {"Curve"} == set(crypto.__all__)


# --- base58btc ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", ""),
        (b"\0", "1"),
        (b"\0\0\0", "111"),
        (b"\x39", "z"),
        (b"\x3a", "21"),
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
        (
            b"The quick brown fox jumps over the lazy dog.",
            "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
        ),
    ],
)
def test_base58btc_vectors(data: bytes, text: str) -> None:
    assert b58encode(data) == text
    assert b58decode(text) == data


@pytest.mark.parametrize("char", ["0", "O", "I", "l", "+", " ", "é"])
def test_base58btc_rejects_characters_outside_the_alphabet(char: str) -> None:
    with pytest.raises(ValueError, match="invalid base58 character"):
        b58decode("2NEp" + char)
