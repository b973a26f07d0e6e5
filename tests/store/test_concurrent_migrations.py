"""Several ``reckon db upgrade`` at once against an empty database, as a rollout starts two
coordinators and a relay that all migrate at start: every one succeeds, exactly one migrates, and
the schema is at the newest revision. Real processes, on SQLite and on the real PostgreSQL (a
database of its own, created and dropped here)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from accounting.store.engine import create_engine
from tests.store.conftest import _admin, postgres_url
from tests.store.test_migrations import head_revision

ROOT = Path(__file__).resolve().parents[2]
MIGRATORS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
        return
    admin, name = postgres_url(), f"t_{uuid.uuid4().hex}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


async def db_upgrade(url: str) -> tuple[int, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "db", "upgrade",
        env={**environment, "RECKON_STORE_URL": url}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_migrators_started_together_on_an_empty_database_all_succeed(empty_database: str) -> None:
    results = await asyncio.gather(*(db_upgrade(empty_database) for _ in range(MIGRATORS)))

    assert [code for code, _ in results] == [0] * MIGRATORS, [output for _, output in results]
    engine = create_engine(empty_database)
    try:
        async with engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    finally:
        await engine.dispose()
    assert [row[0] for row in versions] == [head_revision()]
