"""The accounting store on both of its backends: a SQLite file and the real PostgreSQL.

Every test that takes ``store`` (or ``backend``) runs twice, once per backend. On PostgreSQL each
test gets a fresh schema ``t_<hex>`` (reached through ``search_path``), dropped with everything in
it afterwards. PostgreSQL not answering is a failure, not a skip: CI must prove both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.store.repository import ReportStore
from tests.store.support import Backend

BACKENDS = ["sqlite", "postgresql"]
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def postgres_url() -> str:
    return os.environ.get("RECKON_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 10})
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _create_schema(url: str, schema: str) -> None:
    try:
        await _admin(url, f'CREATE SCHEMA "{schema}"')
        return
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
    pytest.fail(
        f"PostgreSQL at {url} does not answer ({problem}).\n"
        f"The store tests run on PostgreSQL as well as SQLite. Start it with:\n"
        f"    {START_POSTGRES}\n"
        f"or point RECKON_TEST_POSTGRES_URL at another server (trust auth, an existing database).",
        pytrace=False,
    )


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An empty database (no tables) on the parametrized backend."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3")
        return
    url, schema = postgres_url(), f"t_{uuid.uuid4().hex}"
    await _create_schema(url, schema)
    try:
        yield Backend("postgresql", url, schema)
    finally:
        await _admin(url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ReportStore]:
    """A migrated, empty store on ``backend``."""
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()
