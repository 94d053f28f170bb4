"""Dispatch bookkeeping: dispatch_targets, dispatch_batches, dispatch_deliveries.

Revision 0002, after 0001. Reviewed by hand: runs on SQLite and PostgreSQL, imports
nothing from bsky_backfill. New tables only, so no batch mode is needed; the batch
states are spelled out as they are in ``schema.DISPATCH_BATCH_STATES``.

A store made by ``create_all`` with these tables in the metadata (no ``alembic_version``:
stamped at 0001, then upgraded) already has them; they are left as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH_STATES = "'open', 'acknowledged', 'abandoned'"


def _exists(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _exists("dispatch_targets"):
        return  # made with the rest by create_all (see the module docstring)
    op.create_table(
        "dispatch_targets",
        sa.Column("key", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dispatch", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch_seq", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dispatch_targets")),
        sa.UniqueConstraint(
            "dispatch", "integration", name=op.f("uq_dispatch_targets_dispatch_integration")
        ),
    )
    op.create_table(
        "dispatch_batches",
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({_BATCH_STATES})", name=op.f("ck_dispatch_batches_state")),
        sa.ForeignKeyConstraint(
            ["target"],
            ["dispatch_targets.key"],
            name=op.f("fk_dispatch_batches_target_dispatch_targets"),
        ),
        sa.PrimaryKeyConstraint("target", "seq", name=op.f("pk_dispatch_batches")),
    )
    op.create_index(
        op.f("ix_dispatch_batches_target_state"), "dispatch_batches", ["target", "state"]
    )
    op.create_table(
        "dispatch_deliveries",
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        sa.Column("cid", sa.String(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["target"],
            ["dispatch_targets.key"],
            name=op.f("fk_dispatch_deliveries_target_dispatch_targets"),
        ),
        sa.PrimaryKeyConstraint("target", "uri", "cid", name=op.f("pk_dispatch_deliveries")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_deliveries")
    op.drop_table("dispatch_batches")
    op.drop_table("dispatch_targets")
