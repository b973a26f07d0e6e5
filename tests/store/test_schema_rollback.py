"""Rollbacks across a schema change: a release runs on a store a newer release migrated (the
expand/contract rule), and ``downgrade`` undoes a migration only when nothing is lost. Both backends."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from accounting.store.migrate import SchemaUnknown, current_revision, downgrade, upgrade
from accounting.store.repository import ReportStore
from tests.store.support import Backend, publishing_report

NEWER = "9999_newer_release"
ROOT = Path(__file__).resolve().parents[2]


async def migrate_as_a_newer_release(store: ReportStore) -> None:
    """What a later release's expand-only migration does: a new nullable column, a new revision."""
    async with store.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE reports ADD COLUMN reviewed_by VARCHAR(255)"))
        await connection.execute(text("UPDATE alembic_version SET version_num = :newer"), {"newer": NEWER})


async def test_a_store_migrated_by_a_newer_release_is_used_as_it_is(
    backend: Backend, store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate_as_a_newer_release(store)

    with caplog.at_level(logging.WARNING, logger="reckon.store"):
        reopened = await backend.open()  # what a rolled-back coordinator does at start
    try:
        await publishing_report(reopened, accounts=2)  # and it builds and issues on it
        assert len(await reopened.invoices(period_id="2026-10")) == 2
        assert await current_revision(reopened.engine) == NEWER
    finally:
        await reopened.close()
    assert f"the store's schema is at revision {NEWER}, newer than this release knows" in caplog.text


async def test_downgrade_undoes_a_migration_that_loses_nothing_and_upgrade_redoes_it(
    store: ReportStore,
) -> None:
    await downgrade(store.engine, "0005")
    assert await current_revision(store.engine) == "0005"

    await upgrade(store.engine)
    assert await current_revision(store.engine) == "0007"


async def test_downgrade_refuses_to_drop_invoice_series_and_approvals(store: ReportStore) -> None:
    await publishing_report(store, accounts=2)  # numbered and approved (automatically)

    with pytest.raises(
        RuntimeError, match="refusing to downgrade below 0006: 1 invoice series and 1 approvals"
    ):
        await downgrade(store.engine, "0005")
    assert await current_revision(store.engine) == "0007"
    assert len(await store.invoices(period_id="2026-10")) == 2


async def test_downgrade_names_what_it_does_not_know(store: ReportStore) -> None:
    with pytest.raises(SchemaUnknown, match="no revision '0042'"):
        await downgrade(store.engine, "0042")
    await migrate_as_a_newer_release(store)
    with pytest.raises(SchemaUnknown, match=f"at revision {NEWER}, which this release does not know"):
        await downgrade(store.engine, "0005")


async def reckon_db(url: str, *arguments: str) -> tuple[int, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "db", *arguments,
        env={**environment, "RECKON_STORE_URL": url, "COLUMNS": "200"}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, " ".join(output.decode(errors="replace").split())


async def test_reckon_db_downgrade_asks_for_yes_and_says_why_it_refuses(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"

    assert await reckon_db(url, "upgrade") == (0, "store schema is up to date (revision 0007)")
    assert await reckon_db(url, "downgrade", "0005") == (
        2,
        "error: downgrading drops what the migrations after 0005 added; run again with --yes",
    )
    assert await reckon_db(url, "downgrade", "0005", "--yes") == (0, "store schema is at revision 0005")
    assert (await reckon_db(url, "upgrade"))[0] == 0
    store = await ReportStore.open(url)
    try:
        await publishing_report(store, accounts=1)
    finally:
        await store.close()
    code, output = await reckon_db(url, "downgrade", "0005", "--yes")
    assert code == 2 and "refusing to downgrade below 0006" in output
