"""Alembic's environment for the job store: migrate on the connection handed over.

Loaded by Alembic (``runner.alembic_config`` names this directory), never imported. There
is no URL to connect to: ``ensure_schema`` and the revision helper open the connection,
take the schema lock and pass it in ``config.attributes``, so migrations run inside their
transaction (``begin_transaction`` joins it rather than committing on its own).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import TypeDecorator
from sqlalchemy.engine import Connection

from bsky_backfill.errors import ConfigError
from bsky_backfill.state.migrations.runner import migration_options
from bsky_backfill.state.sql.schema import metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write the store's own column types (``UtcDateTime``) as their SQL type: a revision
    must not import application code, which goes on changing after it is written."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise ConfigError(
            "the job store's migrations run when a store opens, or through "
            "`python -m bsky_backfill.state.migrations`; not from the alembic command"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=_render_item,
        **migration_options(context.config.attributes.get("schema")),
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
