"""Distributed execution: Celery workers on Redis, the job store on PostgreSQL."""

__all__: list[str] = []
