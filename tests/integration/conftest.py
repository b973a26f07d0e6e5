"""Fixtures shared by the integration tests (the broker's are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def both_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL on each backend in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
        return
    async with fresh_database() as url:
        yield url
