"""Properties of atproto keys and signatures; base58btc checked against libipld as an oracle."""

from __future__ import annotations

import libipld
from hypothesis import given
from hypothesis import strategies as st

from bsky_backfill.atproto._multibase import b58decode, b58encode
from bsky_backfill.atproto.crypto import (
    Keypair,
    parse_legacy_key,
    parse_public_key,
    verify_signature,
)
from bsky_backfill.errors import InvalidKey

KEYS = [Keypair.from_seed(curve, "property") for curve in ("p256", "k256")]
PREFIXES = [b"\x80\x24", b"\xe7\x01", b"\xed\x01", b""]
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
LEGACY_TYPES = ["EcdsaSecp256r1VerificationKey2019", "EcdsaSecp256k1VerificationKey2019"]

signatures = st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64))
# Text that gets past the cheap checks: base58 characters, and encodings of a known or
# unknown multicodec followed by point-sized bytes with any SEC1 tag.
key_texts = st.one_of(
    st.text(max_size=150),
    st.builds(lambda body: "z" + body, st.text(alphabet=BASE58, max_size=100)),
    st.builds(
        lambda did, prefix, tag, rest: (
            ("did:key:" if did else "") + "z" + b58encode(prefix + tag + rest)
        ),
        st.booleans(),
        st.sampled_from(PREFIXES),
        st.sampled_from([b"\x00", b"\x02", b"\x03", b"\x04", b"\x06"]),
        st.one_of(
            st.binary(min_size=32, max_size=32),
            st.binary(min_size=64, max_size=64),
            st.binary(max_size=70),
        ),
    ),
)


@given(st.sampled_from(KEYS), st.binary(max_size=200), signatures)
def test_verify_never_raises_for_any_signature(keypair: Keypair, data: bytes, sig: bytes) -> None:
    assert verify_signature(keypair.did_key, data, sig) in (True, False)


@given(st.sampled_from(KEYS), st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_signatures_verify_only_their_data(keypair: Keypair, data: bytes, other: bytes) -> None:
    sig = keypair.sign(data)
    assert keypair.public_key.verify(data, sig)
    assert keypair.public_key.verify(data + other, sig) is False


@given(key_texts)
def test_parse_public_key_raises_only_invalid_key(text: str) -> None:
    try:
        key = parse_public_key(text)
    except InvalidKey:
        return
    assert parse_public_key(key.did_key) == key


@given(st.sampled_from([*LEGACY_TYPES, "Multikey", ""]), key_texts)
def test_parse_legacy_key_raises_only_invalid_key(key_type: str, text: str) -> None:
    try:
        key = parse_legacy_key(key_type, text)
    except InvalidKey:
        return
    assert parse_legacy_key(key_type, "z" + b58encode(key.point)) == key


@given(st.binary(max_size=100))
def test_base58_matches_libipld(data: bytes) -> None:
    text = b58encode(data)
    assert "z" + text == libipld.encode_multibase("z", data)
    assert b58decode(text) == data


@given(st.text(alphabet=BASE58, max_size=100))
def test_base58_decode_matches_libipld(text: str) -> None:
    assert b58decode(text) == libipld.decode_multibase("z" + text)[1]
