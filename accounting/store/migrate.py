"""Bring a store's schema to the newest migration (Alembic, on the application's async engine).

Any number of processes may start at once on an empty database (two coordinators and a relay in
one rollout, say): exactly one migrates, the others wait for it and then find the schema at the
head. The migration runs in one transaction that first takes a lock: on PostgreSQL a
transaction-level advisory lock, on SQLite the database's own write lock (``BEGIN IMMEDIATE``;
the busy timeout is how long the others wait).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

_INI = Path(__file__).with_name("alembic.ini")
MIGRATION_LOCK = 0x5245434B4F4E  # "RECKON": the advisory lock key every Reckon migrator takes


def _config(connection: Connection) -> Config:
    config = Config(str(_INI))
    config.set_main_option("script_location", str(_INI.parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def _migrate(connection: Connection, revision: str) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif dialect == "sqlite":
        # pysqlite opens no transaction before DDL: without this each CREATE would commit on its
        # own, and a second migrator would find half a schema ("table ... already exists").
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Idempotent: a store already at ``revision`` is left as it is."""
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, revision)
