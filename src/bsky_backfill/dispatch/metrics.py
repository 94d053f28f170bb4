"""A dispatch run's Prometheus metrics, in a registry of its own (no process-wide
state), every series labelled with the dispatch and integration names.

- ``bsky_backfill_dispatch_records_total{outcome}``: ``acknowledged`` (sent and
  acknowledged in this run), ``skipped`` (acknowledged by an earlier run), ``failed``
  (in a batch that failed for good);
- ``bsky_backfill_dispatch_batches_total{outcome}``: ``acknowledged``, ``failed``,
  ``abandoned`` (left open by a dead run, found at start);
- ``bsky_backfill_dispatch_retries_total{error}``: sends retried, by error class;
- ``bsky_backfill_dispatch_batch_duration_seconds``: one batch, retries included.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["DispatchMetrics"]

_PREFIX: Final = "bsky_backfill_dispatch_"
_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class DispatchMetrics:
    """The metrics of one dispatch run; see the module docstring."""

    def __init__(self, dispatch: str) -> None:
        self.dispatch = dispatch
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["dispatch", "integration"]
        self._records = Counter(
            _PREFIX + "records", "Records by outcome", [*labels, "outcome"], registry=self.registry
        )
        self._batches = Counter(
            _PREFIX + "batches", "Batches by outcome", [*labels, "outcome"], registry=self.registry
        )
        self._retries = Counter(
            _PREFIX + "retries",
            "Sends retried, by error",
            [*labels, "error"],
            registry=self.registry,
        )
        self._duration = Histogram(
            _PREFIX + "batch_duration_seconds",
            "Time to get one batch acknowledged, retries included",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def records(self, integration: str, outcome: str, count: int) -> None:
        """``count`` records of ``integration`` ended with ``outcome``."""
        self._records.labels(self.dispatch, integration, outcome).inc(count)

    def batch(self, integration: str, outcome: str, seconds: float | None = None) -> None:
        """One batch of ``integration`` ended with ``outcome`` after ``seconds``."""
        self._batches.labels(self.dispatch, integration, outcome).inc()
        if seconds is not None:
            self._duration.labels(self.dispatch, integration).observe(seconds)

    def abandoned(self, integration: str, batches: int) -> None:
        """``batches`` left open by a dead run were found and abandoned."""
        self._batches.labels(self.dispatch, integration, "abandoned").inc(batches)

    def retry(self, integration: str, error: str) -> None:
        """A send of ``integration`` failed with ``error`` and is retried."""
        self._retries.labels(self.dispatch, integration, error).inc()
