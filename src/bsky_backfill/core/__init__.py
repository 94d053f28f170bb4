"""The backfill engine: job planning, per-host scheduling and limits, fetching, selection."""

__all__: list[str] = []
