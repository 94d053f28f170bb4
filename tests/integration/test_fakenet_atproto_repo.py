"""The simulated network's repo exports, checked by the reference ``@atproto/repo``.

``tests/support/verify_car.js`` runs the installed real-PDS kit's ``@atproto/repo`` over
our CARs: block hashes, commit schema and signature (k256 and p256), MST shape (layers,
order, and the root CID @atproto/repo builds from the same leaves) and record decoding.
The node script runs twice: once over the sound sample, once over the
damaged CARs, which prove it notices each kind of damage.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbrrr
import pytest

from bsky_backfill.atproto.crypto import Curve, Keypair
from bsky_backfill.atproto.syntax import micros_to_tid
from bsky_backfill.fakenet.repo_writer import BlockOrder, RepoExport, encode_car
from tests.support.realpds import ensure_installed
from tests.support.repos import DID, make_repo

pytestmark = pytest.mark.realpds

VERIFY_CAR = Path(__file__).resolve().parents[1] / "support" / "verify_car.js"
CURVES: tuple[Curve, ...] = ("k256", "p256")
KEYS = {curve: Keypair.from_seed(curve, "atproto-repo-check") for curve in CURVES}
ORDERS: tuple[BlockOrder, ...] = ("newest_first", "tree", "shuffled")
_REV = micros_to_tid(1_750_000_000_000_000)


@dataclass(frozen=True)
class Case:
    """One repo of the sample: ``count`` records, signed with ``curve``, blocks in ``order``."""

    count: int
    curve: Curve
    order: BlockOrder

    @property
    def name(self) -> str:
        return f"{self.count}-{self.curve}-{self.order}"


# Small sizes with every curve and order; bigger ones (deeper MSTs) cost ~0.4 ms per
# record in @atproto/repo, so each order once there and one ~20k repo.
SAMPLE = [
    *(Case(*c) for c in itertools.product((0, 1, 50), CURVES, ORDERS)),
    Case(2000, "k256", "newest_first"),
    Case(2000, "p256", "tree"),
    Case(2000, "k256", "shuffled"),
    Case(20_000, "k256", "newest_first"),
]


def run_verifier(kit: Path, tmp: Path, entries: list[dict[str, str]]) -> tuple[int, dict[str, Any]]:
    """Run verify_car.js once over ``entries``; exit code and its lines by CAR path."""
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(entries))
    proc = subprocess.run(
        ["node", str(VERIFY_CAR), str(kit), str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 2: usage or crash, not a verdict
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(entries), proc.stderr
    return proc.returncode, {line["car"]: line for line in lines}


def write_car(tmp: Path, name: str, car: bytes) -> str:
    path = tmp / f"{name}.car"
    path.write_bytes(car)
    return str(path)


@pytest.fixture(scope="module")
def kit() -> Path:
    """The installed kit; skips locally (fails under CI) without node, via ``require``."""
    return ensure_installed()


# --- the sound sample --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(
    kit: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[RepoExport, dict[str, Any]]]:
    """Every sample repo with @atproto/repo's verdict on it, by case name."""
    tmp = tmp_path_factory.mktemp("sample")
    exports: dict[str, RepoExport] = {}
    entries = []
    for case in SAMPLE:
        key = KEYS[case.curve]
        export = make_repo(case.count, seed=case.count, key=key, order=case.order)
        exports[case.name] = export
        car = write_car(tmp, case.name, export.car)
        entries.append({"car": car, "did": DID, "didKey": key.did_key})
    code, lines = run_verifier(kit, tmp, entries)
    assert code == 0, [line["error"] for line in lines.values() if not line["ok"]]
    return {
        name: (export, lines[entry["car"]])
        for (name, export), entry in zip(exports.items(), entries, strict=True)
    }


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: c.name)
def test_reference_implementation_accepts_our_repo(
    sample: dict[str, tuple[RepoExport, dict[str, Any]]], case: Case
) -> None:
    export, verdict = sample[case.name]
    assert verdict["ok"], verdict["error"]
    assert verdict["records"] == case.count
    assert verdict["commit"] == export.commit_cid.encode("base32")
    # Same keys and the same record CIDs as the writer put in.
    assert verdict["leaves"] == {k: cid.encode("base32") for k, cid in export.record_cids.items()}


# --- damage it must notice ---------------------------------------------------------------


def flip_record_byte(export: RepoExport) -> bytes:
    """The CAR with the last byte of one like record XOR 1.

    A like record's last value is its ``createdAt`` text, so the block stays valid
    DAG-CBOR ('Z' becomes '['): only the hash check can catch it.
    """
    key = next(k for k in export.record_cids if k.startswith("app.bsky.feed.like/"))
    cid = export.record_cids[key].cid_bytes
    frame = cid + export.blocks[cid]
    at = export.car.index(frame) + len(frame) - 1
    car = bytearray(export.car)
    car[at] ^= 1
    return bytes(car)


def key_layer(key: str) -> int:
    """The MST layer of ``key``, from the spec (leading zero bits of sha256 // 2)."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    return (256 - digest.bit_length()) // 2


def like_keys(layer: int, count: int) -> list[str]:
    """The first ``count`` like keys (by TID) whose MST layer is ``layer``."""
    keys = (f"app.bsky.feed.like/{micros_to_tid(1_700_000_000_000_000 + i)}" for i in range(10**6))
    return list(itertools.islice((k for k in keys if key_layer(k) == layer), count))


def one_node_repo(keys: list[str], *, compress: bool = True) -> bytes:
    """A signed repo whose MST is a single node holding ``keys`` in the given order.

    Sound for sorted layer-0 keys; with a higher-layer key it breaks the layer rule,
    and ``compress=False`` writes every key in full (``p`` = 0), which parses but is
    not the canonical encoding.
    """
    blocks: list[tuple[bytes, bytes]] = []

    def put(value: Any) -> cbrrr.CID:
        data = bytes(cbrrr.encode_dag_cbor(value))
        cid = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(data)
        blocks.append((cid.cid_bytes, data))
        return cid

    entries, prev = [], b""
    for i, key in enumerate(keys):
        created = f"2024-01-01T00:00:{i:02d}.000Z"
        value = put({"$type": "app.bsky.feed.like", "createdAt": created})
        raw = key.encode()
        p = 0
        if compress:
            while p < min(len(prev), len(raw)) and prev[p] == raw[p]:
                p += 1
        entries.append({"k": raw[p:], "p": p, "t": None, "v": value})
        prev = raw
    data = put({"e": entries, "l": None})
    unsigned: dict[str, Any] = {"did": DID, "version": 3, "data": data, "rev": _REV, "prev": None}
    sig = KEYS["k256"].sign(bytes(cbrrr.encode_dag_cbor(unsigned)))
    commit = put(dict(unsigned, sig=sig))
    return encode_car([commit], reversed(blocks))


# What @atproto/repo's error must mention for each damaged CAR.
DAMAGE = {
    "flipped-record-byte": "Not a valid CID",
    "k256-other-key": "Invalid signature",
    "p256-other-key": "Invalid signature",
    "p256-signed-k256-claimed": "Invalid signature",
    "other-did": "Invalid repo did",
    "wrong-layer": "layer",
    "uncompressed-keys": "not canonical",
}


def damaged_cars() -> dict[str, tuple[bytes, str, str]]:
    """Each DAMAGE case, plus a sound hand-built control: name -> (CAR, did, did:key)."""
    k256, p256 = KEYS["k256"], KEYS["p256"]
    other = {curve: Keypair.from_seed(curve, "someone-else") for curve in CURVES}
    sound = make_repo(50, key=k256, order="tree")
    low, high = like_keys(0, 3), like_keys(1, 1)
    return {
        # Proves the hand-built repos below fail for their defect, not for the builder.
        "control-one-node": (one_node_repo(low), DID, k256.did_key),
        "flipped-record-byte": (flip_record_byte(sound), DID, k256.did_key),
        "k256-other-key": (make_repo(50, key=other["k256"]).car, DID, k256.did_key),
        "p256-other-key": (make_repo(50, key=other["p256"]).car, DID, p256.did_key),
        "p256-signed-k256-claimed": (make_repo(50, key=p256).car, DID, k256.did_key),
        "other-did": (sound.car, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", k256.did_key),
        "wrong-layer": (one_node_repo(sorted(low + high)), DID, k256.did_key),
        "uncompressed-keys": (one_node_repo(low, compress=False), DID, k256.did_key),
    }


@pytest.fixture(scope="module")
def damage(kit: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """@atproto/repo's verdict on each damaged CAR (and the control), by name."""
    tmp = tmp_path_factory.mktemp("damage")
    entries = {
        name: {"car": write_car(tmp, name, car), "did": did, "didKey": did_key}
        for name, (car, did, did_key) in damaged_cars().items()
    }
    code, lines = run_verifier(kit, tmp, list(entries.values()))
    assert code == 1  # some CAR failed, and the exit code says so
    return {name: lines[entry["car"]] for name, entry in entries.items()}


def test_hand_built_control_is_accepted(damage: dict[str, dict[str, Any]]) -> None:
    verdict = damage["control-one-node"]
    assert verdict["ok"], verdict["error"]
    assert verdict["records"] == 3


@pytest.mark.parametrize(("name", "mention"), list(DAMAGE.items()))
def test_reference_implementation_rejects(
    damage: dict[str, dict[str, Any]], name: str, mention: str
) -> None:
    verdict = damage[name]
    assert not verdict["ok"]
    assert mention in verdict["error"]
