"""The job store: per-job, per-DID state, the exactly-once batch protocol, recovery, and
the persisted identity cache. See ``protocol`` for the contracts and README.md for a map."""

from bsky_backfill.state.identity_cache import StoreIdentityCache
from bsky_backfill.state.model import BatchState, Claim, Job, JobState, Recovery
from bsky_backfill.state.protocol import JobStore
from bsky_backfill.state.sql import SqlJobStore, StoreOptions

__all__ = [
    "BatchState",
    "Claim",
    "Job",
    "JobState",
    "JobStore",
    "Recovery",
    "SqlJobStore",
    "StoreIdentityCache",
    "StoreOptions",
]
