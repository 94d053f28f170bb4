"""The repo reader's C part (``_fastrepo.c``), or None where it was not compiled.

It is optional: ``pip install`` builds it where a C compiler is found and skips it
otherwise; without it every repo is read in Python, with the same results, slower.
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

__all__ = ["fastrepo"]


def _load() -> ModuleType | None:
    try:
        from bsky_backfill.atproto import _fastrepo
    except ImportError:
        return None
    return _fastrepo


fastrepo: Final = _load()
