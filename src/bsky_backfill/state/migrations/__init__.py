"""The job store's schema migrations (Alembic), run by ``ensure_schema`` when a store opens.

``python -m bsky_backfill.state.migrations "message"`` writes the next revision; see
``README.md`` here.
"""

from bsky_backfill.state.migrations.runner import BASELINE, upgrade_to_head

__all__ = ["BASELINE", "upgrade_to_head"]
