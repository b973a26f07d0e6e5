"""deploy/scripts/backup-store.sh and restore-store.sh on a real PostgreSQL store.

A month closes end to end on PostgreSQL (compute and storage workers on seeded stores, the
coordinator, `reckon close-period --wait`, every invoice paid); the backup script dumps the store,
the restore script restores the dump into a database it creates, and `reckon reports reconcile`,
a process of its own, finds every cent there with the same totals. Neither script ever prints the
store's password, and both refuse rather than guess. Every database made here is dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.core.lifecycle import ReportStatus
from contracts import Period, Topology
from tests.e2e.platform import expected_totals, platform
from tests.postgres import POSTGRES_URL, fresh_database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("pg_dump", "pg_restore", "psql")),
        reason="needs PostgreSQL's client tools (pg_dump, pg_restore, psql)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "deploy" / "scripts" / "backup-store.sh"
RESTORE = ROOT / "deploy" / "scripts" / "restore-store.sh"
PERIOD = "2026-10"
ACCOUNTS = 40

# The test server trusts its user, so a URL without a password gets this one: libpq sends it only
# if asked, and the scripts must never show it either way.
FAKE_PASSWORD = "s3cret-Pw@with:/?#"
DUMP_NAME = re.compile(r"reckon-store-(?P<database>[A-Za-z0-9_.-]+)-\d{8}T\d{6}Z\.dump")


def with_password(url: str) -> tuple[str, str]:
    """``url`` and its password: the configured one, else ``FAKE_PASSWORD`` (URL-encoded)."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url, parts.password
    netloc = f"{parts.username}:{quote(FAKE_PASSWORD, safe='')}@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), FAKE_PASSWORD


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def database_url(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{name}"


def target(url: str) -> str:
    """How the scripts name a database: user@host:port/database, never the password."""
    parts = urlsplit(url)
    return f"{parts.username}@{parts.hostname}:{parts.port or 5432}{parts.path}"


def environment(store_url: str) -> dict[str, str]:
    """This environment without RECKON_* and libpq's PG*, naming ``store_url``; the venv first on PATH."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith(("RECKON_", "PG"))}
    return kept | {
        "RECKON_STORE_URL": store_url,
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",  # inspecting the store never needs the broker
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "COLUMNS": "200",
    }


async def run(*argv: str | Path, env: dict[str, str], cwd: Path = ROOT) -> tuple[int, str]:
    """A command's exit code and its stdout and stderr together."""
    done = await asyncio.create_subprocess_exec(
        *(str(part) for part in argv),
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(done.communicate(), 300)
    assert done.returncode is not None
    return done.returncode, output.decode(errors="replace")


async def reckon(store_url: str, *arguments: str) -> tuple[int, str]:
    return await run(sys.executable, "-m", "accounting.cli", *arguments, env=environment(store_url))


async def reckon_json(store_url: str, *arguments: str) -> Any:
    code, output = await reckon(store_url, *arguments, "--json")
    assert code == 0, output
    return json.loads(output)


@asynccontextmanager
async def dropped_afterwards(name: str) -> AsyncIterator[None]:
    """Drop the database ``name`` (which the restore script creates) when the block ends."""
    try:
        yield
    finally:
        admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()


async def close_a_month(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, workdir: Path, store: str
) -> dict[str, str]:
    """Close PERIOD on ``store`` with every role a process; each account's expected invoice total."""
    period = Period.month(PERIOD)
    async with platform(
        amqp_url, connection, topology, workdir, store, accounts=ACCOUNTS, period=period
    ) as running:
        await running.start_worker("compute")
        await running.start_worker("storage")
        await running.start_coordinator()
        code, output = await run(
            sys.executable, "-m", "accounting.cli", "close-period", PERIOD, "--wait",
            "--requested-by", "test/backup-restore", env=running.env(),
        )  # fmt: skip
        assert code == 0 and "completed" in output, output
        await running.until(ReportStatus.COMPLETED)
        invoices = await running.issued()
        await running.until_paid(invoices)
        expected = await expected_totals(workdir, running.period)
        assert {invoice.account_id: str(invoice.total) for invoice in invoices} == expected
        return expected


async def test_a_closed_month_backed_up_and_restored_into_a_fresh_database_reconciles_to_the_cent(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    restored_name = f"reckon_{uuid.uuid4().hex[:12]}_restored"
    async with dropped_afterwards(restored_name):
        async with fresh_database() as plain_source:
            source, password = with_password(plain_source)
            expected = await close_a_month(amqp_url, connection, topology, tmp_path, source)
            before = await reckon_json(source, "reports", "reconcile", PERIOD)
            shown_before = await reckon_json(source, "reports", "show", PERIOD)

            code, output = await run(BACKUP, "--dir", backups, env=environment(source))

            assert code == 0, output
            assert password not in output and quote(password, safe="") not in output
            [name] = files_in(backups)
            dump = backups / name
            found = DUMP_NAME.fullmatch(dump.name)
            assert found and found["database"] == urlsplit(source).path.lstrip("/"), dump.name
            assert stat.S_IMODE(dump.stat().st_mode) == 0o600, "a dump holds every invoice: owner only"
            assert str(dump) in output and "schema revision" in output

            restored = database_url(source, restored_name)
            code, output = await run(RESTORE, "--create", dump, env=environment(restored))

            assert code == 0, output
            assert password not in output and quote(password, safe="") not in output
            assert f"created database {target(restored)}" in output
            assert f"into {target(restored)} (schema revision" in output
            assert "store schema is up to date" in output, "reckon db upgrade ran on the restored store"
            assert f"reckon reports reconcile {PERIOD}" in output, "it says what to check, for which period"
        # The original database is gone: what follows can only read the restored one.

        # The check an operator runs, as its own process.
        code, table = await reckon(restored, "reports", "reconcile", PERIOD)
        assert code == 0, table
        assert "OK: every cent traced" in table
        after = await reckon_json(restored, "reports", "reconcile", PERIOD)
        shown_after = await reckon_json(restored, "reports", "show", PERIOD)

        # A second restore into it is refused: it is not fresh any more.
        code, output = await run(RESTORE, dump, env=environment(restored))
        assert code == 1 and "is not empty" in output, output
        assert password not in output

    assert after == before, "the restored store reconciles exactly as the original did"
    assert after["totals"]["ok"] is True and after["totals"]["problem_count"] == 0
    assert shown_after == shown_before
    assert Decimal(after["totals"]["total"]) == sum(Decimal(total) for total in expected.values())
    assert after["totals"]["invoices"] == len(expected)


async def test_the_scripts_refuse_what_they_cannot_do_safely_and_never_print_the_password(
    tmp_path: Path,
) -> None:
    async with fresh_database() as plain:
        store, password = with_password(plain)
        code, output = await reckon(store, "db", "upgrade")
        assert code == 0, output

        # Not a Reckon store (no schema revision), or no database at all: no dump is left behind.
        async with fresh_database() as empty:
            code, output = await run(BACKUP, "--dir", tmp_path, env=environment(with_password(empty)[0]))
            assert code == 1 and "a Reckon store" in output, output
        missing = database_url(store, f"reckon_missing_{uuid.uuid4().hex[:8]}")
        code, output = await run(BACKUP, "--dir", tmp_path, env=environment(missing))
        assert code == 1 and "cannot read the schema revision" in output, output
        assert password not in output
        assert files_in(tmp_path) == []

        code, output = await run(BACKUP, "--output", tmp_path / "store.dump", env=environment(store))
        assert code == 0, output
        code, output = await run(BACKUP, "--output", tmp_path / "store.dump", env=environment(store))
        assert code == 1 and "exists" in output, "a dump is never overwritten"
        assert files_in(tmp_path) == ["store.dump"]

        # A restore over a store that has tables, or --create of a database that exists.
        code, output = await run(RESTORE, tmp_path / "store.dump", env=environment(store))
        assert code == 1 and "is not empty" in output and "--clean" in output, output
        code, output = await run(RESTORE, "--create", tmp_path / "store.dump", env=environment(store))
        assert code == 1 and "exists already" in output, output
        # ...into a database that does not exist, without --create.
        code, output = await run(RESTORE, "--no-upgrade", tmp_path / "store.dump", env=environment(missing))
        assert code == 1 and "--create" in output, output
        assert password not in output

        # What is not a dump, and a SQLite store.
        (tmp_path / "not-a-dump").write_text("SELECT 1;\n")
        code, output = await run(RESTORE, "--no-upgrade", tmp_path / "not-a-dump", env=environment(missing))
        assert code == 1 and "not a pg_dump archive" in output, output
        code, output = await run(BACKUP, env=environment(f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"))
        assert code == 1 and "SQLite" in output, output
