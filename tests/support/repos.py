"""Small signed repos for reader tests, built with the simulated network's writer."""

from __future__ import annotations

import random
from typing import Any

from bsky_backfill.atproto.cid import read_varint
from bsky_backfill.atproto.crypto import Keypair
from bsky_backfill.atproto.syntax import micros_to_tid
from bsky_backfill.fakenet.records import generate_records
from bsky_backfill.fakenet.repo_writer import RepoExport, build_repo

__all__ = ["DID", "KEY", "frame_ends", "make_records", "make_repo"]

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
KEY = Keypair.from_seed("k256", "reader-tests")


def make_records(count: int, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``count`` records in the simulated network's mix, deterministic for ``seed``."""
    return generate_records(count, random.Random(seed))


def make_repo(count: int = 50, *, seed: int = 0, key: Keypair = KEY, **options: Any) -> RepoExport:
    """A signed repo of ``count`` records; ``options`` go to ``build_repo``."""
    return build_repo(
        DID,
        make_records(count, seed=seed),
        rev=micros_to_tid(1_750_000_000_000_000),
        sign=key.sign,
        **options,
    )


def frame_ends(car: bytes) -> list[int]:
    """Byte offsets where each CAR frame ends; the first is the header's end."""
    ends, pos = [], 0
    while pos < len(car):
        length, pos = read_varint(car, pos)
        pos += length
        ends.append(pos)
    return ends
