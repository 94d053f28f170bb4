"""Manifest: config hashing and checks; the written file (per sink) is in test_sinks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from bsky_backfill.sinks.manifest import Manifest, canonical_json

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_config_hash_ignores_key_order_and_whitespace() -> None:
    a = Manifest("j", {"b": 1, "a": {"y": "é", "x": [1, 2]}}, NOW, NOW)
    b = Manifest("j", {"a": {"x": [1, 2], "y": "é"}, "b": 1}, NOW, NOW)
    assert a.config_sha256 == b.config_sha256
    expected = hashlib.sha256('{"a":{"x":[1,2],"y":"é"},"b":1}'.encode()).hexdigest()
    assert a.config_sha256 == expected
    assert canonical_json({"k": None}) == b'{"k":null}'


def test_a_config_json_cannot_hold_is_refused_when_built() -> None:
    with pytest.raises(TypeError):
        Manifest("j", {"when": NOW}, NOW, NOW)
