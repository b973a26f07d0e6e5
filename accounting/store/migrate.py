"""Bring a store's schema to the newest migration (Alembic, on the application's async engine).

Any number of processes may start at once on an empty database (two coordinators and a relay in
one rollout, say): exactly one migrates, the others wait for it and then find the schema at the
head. The migration runs in one transaction that first takes a lock: on PostgreSQL a
transaction-level advisory lock, on SQLite the database's own write lock (``BEGIN IMMEDIATE``;
the busy timeout is how long the others wait).

A store whose schema is **ahead** of this release (a newer release migrated it, then was rolled
back) is used as it is: migrations only ever expand the schema (the rule in docs/architecture.md),
so this release runs on it; it logs that and migrates nothing. ``downgrade`` exists for what the
rule cannot cover.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("reckon.store")

_INI = Path(__file__).with_name("alembic.ini")
MIGRATION_LOCK = 0x5245434B4F4E  # "RECKON": the advisory lock key every Reckon migrator takes


def _config(connection: Connection) -> Config:
    config = Config(str(_INI))
    config.set_main_option("script_location", str(_INI.parent / "migrations"))
    config.attributes["connection"] = connection
    return config


class SchemaUnknown(RuntimeError):
    """``downgrade`` was asked for a revision this release does not know."""


def _lock(connection: Connection) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif dialect == "sqlite":
        # pysqlite opens no transaction before DDL: without this each CREATE would commit on its
        # own, and a second migrator would find half a schema ("table ... already exists").
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _ahead(connection: Connection, config: Config) -> str | None:
    """The store's revision when this release does not know it (a newer release's), else None."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return None
    try:
        ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:
        return current
    return None


def _migrate(connection: Connection, revision: str) -> None:
    _lock(connection)
    config = _config(connection)
    ahead = _ahead(connection, config)
    if ahead is not None:
        head = ScriptDirectory.from_config(config).get_current_head()
        log.warning(
            "the store's schema is at revision %s, newer than this release knows (its newest is %s): "
            "a newer release migrated it and was rolled back. Migrations only expand the schema, so "
            "this release runs on it as it is and migrates nothing",
            ahead,
            head,
        )
        return
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    _lock(connection)
    config = _config(connection)
    ahead = _ahead(connection, config)
    if ahead is not None:
        raise SchemaUnknown(
            f"the store is at revision {ahead}, which this release does not know: downgrade it "
            "with the release that migrated it"
        )
    try:
        ScriptDirectory.from_config(config).get_revision(revision)
    except CommandError:
        raise SchemaUnknown(f"no revision {revision!r} in this release's migrations") from None
    command.downgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Idempotent: a store already at ``revision`` (or ahead of this release) is left as it is."""
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Undo the migrations after ``revision``, under the migration lock. Each migration's own
    ``downgrade`` refuses to drop data that cannot be given back (see docs/architecture.md)."""
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
