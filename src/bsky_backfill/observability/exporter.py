"""``/metrics`` of a ``run``: prometheus-client's own HTTP server on
``monitoring.prometheus_port`` (0: none) and ``prometheus_address``, for as long as the
job runs. A port already taken is logged, not fatal: a long backfill does not stop
for want of a metrics port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from bsky_backfill.config.schema import Monitoring

__all__ = ["metrics_server"]

logger = structlog.get_logger(__name__)


@contextlib.contextmanager
def metrics_server(registry: CollectorRegistry, monitoring: Monitoring) -> Iterator[int | None]:
    """Serve ``registry`` as the config says; yields the port served on (None: none)."""
    if monitoring.prometheus_port == 0:
        yield None
        return
    address, port = monitoring.prometheus_address, monitoring.prometheus_port
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        logger.warning(
            "metrics.unavailable",
            address=address,
            port=port,
            error=str(exc),
            fix="set monitoring.prometheus_port to a free port, or 0 for no metrics",
        )
        yield None
        return
    logger.info("metrics.serving", url=f"http://{address}:{server.server_port}/metrics")
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
