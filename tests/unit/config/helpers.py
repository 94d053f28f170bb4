"""Building blocks for the config tests: a minimal valid config and error collection."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from bsky_backfill.config import load_config
from bsky_backfill.errors import ConfigError

MINIMAL = """\
backfill:
  name: study
  source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}
  time_range: {start_date: "2025-01-02"}
"""
"""Lines 1-4; text appended with :func:`with_lines` starts on line 5."""

FIRST_EXTRA_LINE = 5


def with_lines(extra: str) -> str:
    """:data:`MINIMAL` plus ``extra`` (dedented, then indented under ``backfill:``)."""
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "  ")


def problems(
    text: str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> list[ConfigError]:
    """Every problem ``load_config`` reports for ``text``; fails if it loads."""
    try:
        load_config(text, environ=environ or {}, base_dir=base_dir)
    except ConfigError as exc:
        return list(exc.problems)
    raise AssertionError("the config loaded, but problems were expected")


def only_problem(text: str, *, environ: Mapping[str, str] | None = None) -> ConfigError:
    """The single problem ``load_config`` reports for ``text``."""
    found = problems(text, environ=environ)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]
