"""Alembic environment: migrations always run on a connection handed over by ``migrate.upgrade``."""

from __future__ import annotations

from alembic import context

from accounting.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `reckon db upgrade` (accounting.store.migrate), not bare alembic")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
