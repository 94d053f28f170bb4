"""bsky-backfill: exact, verified, resumable backfills of AT Protocol repositories."""

from bsky_backfill.errors import BackfillError

__all__ = ["BackfillError", "__version__"]

__version__ = "0.1.0"
