"""The live dashboard page the server answers at ``/``.

One self-contained HTML file (``dashboard.html``: inline CSS and plain JavaScript, no
external resources, no build step) shipped as package data. The page itself needs no
key: it asks for one and sends it as ``Authorization: Bearer`` to the ``/api/backfill``
routes, which do the checking (read to view, write to cancel).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = ["DASHBOARD_HTML"]

DASHBOARD_HTML: Final[str] = (
    files("bsky_backfill.api").joinpath("dashboard.html").read_text(encoding="utf-8")
)
"""The page's HTML, read once at import (a missing file fails at startup, not per request)."""
