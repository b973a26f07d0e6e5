"""The real PostgreSQL for tests: a throw-away database per test, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

POSTGRES_URL = os.environ.get("RECKON_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
START_HINT = "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Create an empty database next to ``test`` and yield its URL; fail clearly if PostgreSQL is down."""
    name = f"reckon_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OSError as error:
        await admin.dispose()
        pytest.fail(f"PostgreSQL did not answer at {POSTGRES_URL} ({error}); {START_HINT}", pytrace=False)
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
