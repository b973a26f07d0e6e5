"""`kubectl rollout undo` across a schema change: the previous release — the code of the commit
before the last one that changed the store's migrations, checked out from git — runs a whole
period on a store the current release has migrated (docs/architecture.md, "Schema changes":
migrations only expand, so the release before one still runs on its schema).

Every role runs the previous release's code (an undo rolls back the image every role shares);
the current release then reads what it wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.store.migrate import current_revision
from contracts import Topology
from tests.e2e.platform import ROOT, SERVICES, expected_totals, platform
from tests.postgres import fresh_database

pytestmark = pytest.mark.integration

MIGRATIONS = "accounting/store/migrations/versions"
PACKAGES = ("accounting", "contracts", "transport", "workers", "observability", "payments", "config")


def git(*arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = f"git {' '.join(arguments)}: {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI needs the repository's history for this test", pytrace=False)
        pytest.skip(f"{message} (not a git checkout with history)")
    return done.stdout.strip()


def previous_release() -> str:
    """The commit before the last one that changed the migrations."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    last = git("log", "-1", "--format=%H", "--", MIGRATIONS)
    return git("rev-parse", f"{last}^")


def check_out(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, *PACKAGES],
        capture_output=True, check=True,
    )  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_previous_release_closes_a_month_on_the_current_schema(
    backend: str,
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    tmp_path: Path,
) -> None:
    commit = previous_release()
    code = check_out(commit, tmp_path / "previous")
    head = sorted(path.name for path in (ROOT / MIGRATIONS).glob("[0-9]*.py"))[-1].split("_", 1)[0]
    theirs = sorted(path.name for path in (code / MIGRATIONS).glob("[0-9]*.py"))[-1].split("_", 1)[0]
    assert theirs < head, f"{commit[:10]} already has migration {head}: not the release before it"

    async def run(store_url: str) -> None:
        async with platform(
            amqp_url, connection, topology, tmp_path, store_url, accounts=30, code=code
        ) as running:
            assert await current_revision(running.store.engine) == head  # migrated by this release
            for service in SERVICES:
                await running.start_worker(service)
            await running.start_coordinator()
            await running.close_period()
            await running.until(ReportStatus.COMPLETED, timeout=180)
            invoices = await running.issued()
            await running.until_paid(invoices)
            assert await current_revision(running.store.engine) == head  # it migrated nothing
            totals = {invoice.account_id: str(invoice.total) for invoice in invoices}
            assert totals == await expected_totals(tmp_path, running.period)
            assert running.logged("coordinator", f"schema is at revision {head}")

    if backend == "sqlite":
        await run(f"sqlite+aiosqlite:///{tmp_path / 'reckon.sqlite3'}")
    else:
        async with fresh_database() as url:
            await run(url)
