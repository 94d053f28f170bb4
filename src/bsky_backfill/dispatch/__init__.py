"""Replay stored records to downstream integrations (webhook, Redis stream), each record
acknowledged once per integration. See README.md in this folder."""

from bsky_backfill.dispatch.config import DispatchConfig
from bsky_backfill.dispatch.loader import load_dispatch_config, load_dispatch_config_text
from bsky_backfill.dispatch.metrics import DispatchMetrics
from bsky_backfill.dispatch.runner import DispatchOutcome, IntegrationOutcome, run_dispatch
from bsky_backfill.dispatch.targets import Delivery, Target

__all__ = [
    "Delivery",
    "DispatchConfig",
    "DispatchMetrics",
    "DispatchOutcome",
    "IntegrationOutcome",
    "Target",
    "load_dispatch_config",
    "load_dispatch_config_text",
    "run_dispatch",
]
