"""The HTTP API service: ``bsky-backfill serve``."""

__all__: list[str] = []
