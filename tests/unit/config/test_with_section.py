"""with_section: a config's text with one section set, reading back to the same data."""

from __future__ import annotations

import pytest

from bsky_backfill.config.yamldoc import read_yaml, with_section
from bsky_backfill.errors import ConfigError

TEXT = """\
backfill:
  name: study   # a comment
  source: {type: inline, dids: ["$${not-a-variable}"]}
  distributed: {shard_size: 5}
"""


def test_the_section_is_set_and_everything_else_reads_back_the_same() -> None:
    section = {"state_url": "postgresql://db/x", "state_schema": None, "shard_size": 9}
    updated = read_yaml(with_section(TEXT, "distributed", section), environ={}).data
    original = read_yaml(TEXT, environ={}).data
    assert updated == {"backfill": {**original["backfill"], "distributed": section}}
    assert updated["backfill"]["source"]["dids"] == ["${not-a-variable}"]


def test_a_text_without_a_backfill_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="backfill"):
        with_section("other: 1\n", "distributed", {})
