"""The repo reader's C part (``_fastrepo.c``), or None where it was not compiled.

It is optional: ``pip install`` builds it where a C compiler is found and skips it
otherwise; without it every repo is read in Python, with the same results, slower.
"""

from __future__ import annotations

__all__ = ["fastrepo"]

try:
    from bsky_backfill.atproto import _fastrepo as fastrepo
except ImportError:  # not compiled here
    fastrepo = None  # type: ignore[assignment]
