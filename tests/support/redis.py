"""Redis for tests: the server on 127.0.0.1:6379 that runs on every machine here and in
CI. Tests keep apart by key prefix (and Celery queue name), never by flushing."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

from tests.support import require

__all__ = ["REDIS_URL", "fresh_prefix", "require_redis"]

REDIS_URL = os.environ.get("BSKY_BACKFILL_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    """Skip (locally) or fail (under CI) when the Redis server cannot be reached."""
    parts = urlsplit(REDIS_URL)
    address = (parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        with socket.create_connection(address, 2):
            return
    except OSError:
        require(False, f"a Redis server at {address[0]}:{address[1]}")


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}"
