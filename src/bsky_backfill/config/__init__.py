"""The backfill config: schema, loader, legacy migration. See README.md in this folder."""

from bsky_backfill.config.loader import load_config
from bsky_backfill.config.migrate import migrate_config
from bsky_backfill.config.schema import BackfillConfig

__all__ = ["BackfillConfig", "load_config", "migrate_config"]
