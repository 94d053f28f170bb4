"""The initial schema: store_meta, jobs, dids, batches, identities.

Revision 0001, the first. Exactly what ``metadata.create_all`` made before Alembic, so a
store made that way is stamped here rather than re-created: constraint and index names
follow ``schema.metadata``'s naming convention, the CHECKs list the enums' values as they
were, and ``UtcDateTime`` is its SQL type, ``DateTime(timezone=True)``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

__all__ = ["downgrade", "upgrade"]

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JOB_STATES = "'pending', 'running', 'completed', 'failed', 'cancelled'"
_DID_STATES = (
    "'pending', 'in_progress', 'complete', 'not_found', 'takendown', 'deactivated', "
    "'suspended', 'invalid_did', 'failed'"
)
_BATCH_STATES = "'open', 'committed', 'published', 'abandoned'"


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    op.create_table(
        "jobs",
        sa.Column("key", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("config_text", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch_seq", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(f"state IN ({_JOB_STATES})", name=op.f("ck_jobs_state")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_jobs_job_id")),
    )
    op.create_table(
        "dids",
        sa.Column("job", sa.Integer(), nullable=False),
        sa.Column("did", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker_id", sa.String(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handle", sa.String(), nullable=True),
        sa.Column("pds", sa.String(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("rev", sa.String(), nullable=True),
        sa.Column("commit_cid", sa.String(), nullable=True),
        sa.Column("verified", sa.String(length=16), nullable=True),
        sa.Column("records", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "records_by_collection",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column("bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error_kind", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("superseded_batch", sa.Integer(), nullable=True),
        sa.CheckConstraint(f"state IN ({_DID_STATES})", name=op.f("ck_dids_state")),
        sa.ForeignKeyConstraint(["job"], ["jobs.key"], name=op.f("fk_dids_job_jobs")),
        sa.PrimaryKeyConstraint("job", "did", name=op.f("pk_dids")),
    )
    op.create_index(op.f("ix_dids_job_state_host_did"), "dids", ["job", "state", "host", "did"])
    op.create_index(op.f("ix_dids_job_batch"), "dids", ["job", "batch"])
    op.create_table(
        "batches",
        sa.Column("job", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.String(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dids", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(f"state IN ({_BATCH_STATES})", name=op.f("ck_batches_state")),
        sa.ForeignKeyConstraint(["job"], ["jobs.key"], name=op.f("fk_batches_job_jobs")),
        sa.PrimaryKeyConstraint("job", "seq", name=op.f("pk_batches")),
    )
    op.create_index(op.f("ix_batches_job_state"), "batches", ["job", "state"])
    op.create_table(
        "identities",
        sa.Column("did", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("did", name=op.f("pk_identities")),
    )
    op.create_index(op.f("ix_identities_expires_at"), "identities", ["expires_at"])


def downgrade() -> None:
    op.drop_table("identities")
    op.drop_table("batches")
    op.drop_table("dids")
    op.drop_table("jobs")
    op.drop_table("store_meta")
