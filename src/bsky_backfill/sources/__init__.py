"""Where a job's DIDs come from: one module per source type (DESIGN.md ``source.type``)."""

__all__: list[str] = []
