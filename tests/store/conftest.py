"""The accounting store on both of its backends: a SQLite file and the real PostgreSQL.

Every test that takes ``store`` runs twice, once per backend. On PostgreSQL each test gets a fresh
schema ``t_<hex>`` (reached through ``search_path``), dropped with everything in it afterwards.
PostgreSQL not answering is a failure, not a skip: CI must prove both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.store.migrate import upgrade
from accounting.store.repository import ReportStore
from contracts import (
    AbortCode,
    AbortReason,
    InvoiceIssued,
    InvoiceLine,
    InvoiceRef,
    Period,
    ReportAborted,
    ReportCompleted,
    invoice_id,
    report_id,
)

BACKENDS = ["sqlite", "postgresql"]
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

OCTOBER = Period.month("2026-10")
T0 = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
"""The tests' clock starts here: five minutes after October closed."""


def minutes(n: float) -> datetime:
    """``n`` minutes after ``T0``."""
    return T0 + timedelta(minutes=n)


def postgres_url() -> str:
    return os.environ.get("RECKON_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@dataclass(frozen=True)
class Backend:
    """Where one test's store lives; ``open()`` opens (and migrates) another store on the same database."""

    name: str
    url: str
    schema: str | None = None

    async def open(self) -> ReportStore:
        if self.schema is None:
            return await ReportStore.open(self.url)
        engine = create_async_engine(self.url, connect_args={"server_settings": {"search_path": self.schema}})
        try:
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return ReportStore(engine)


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


_BACKEND = pytest.StashKey[Backend]()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReportStore]:
    """A migrated, empty store on the parametrized backend."""
    if request.param == "sqlite":
        backend = Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3")
        request.node.stash[_BACKEND] = backend
        opened = await backend.open()
        yield opened
        await opened.close()
        return
    url, schema = postgres_url(), f"t_{uuid.uuid4().hex}"
    await _create_schema(url, schema)
    backend = Backend("postgresql", url, schema)
    request.node.stash[_BACKEND] = backend
    try:
        opened = await backend.open()
        try:
            yield opened
        finally:
            await opened.close()
    finally:
        await _admin(url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def backend(store: ReportStore, request: pytest.FixtureRequest) -> Backend:
    """The database behind this test's ``store``."""
    behind: Backend = request.node.stash[_BACKEND]
    return behind


# --- sample messages -----------------------------------------------------------------------------


def invoice(account_id: str, total: str, *, revision: int = 1, period: Period = OCTOBER) -> InvoiceIssued:
    """One account's invoice of one line; ids are the deterministic ones the coordinator uses."""
    amount = Decimal(total)
    return InvoiceIssued(
        invoice_id=invoice_id(account_id, period.period_id, revision),
        report_id=report_id(period.period_id, revision),
        revision=revision,
        account_id=account_id,
        period=period,
        currency="EUR",
        lines=(
            InvoiceLine(
                item="compute.vcpu-hours",
                description="vCPU hours",
                tier=1,
                quantity=Decimal("744.000000"),
                unit="hour",
                unit_price=Decimal("0.0125"),
                amount=amount,
            ),
        ),
        subtotal=amount,
        total=amount,
    )


def completed(
    invoices: tuple[InvoiceIssued, ...], *, revision: int = 1, period: Period = OCTOBER
) -> ReportCompleted:
    return ReportCompleted(
        report_id=report_id(period.period_id, revision),
        revision=revision,
        period=period,
        currency="EUR",
        invoices=tuple(
            InvoiceRef(invoice_id=i.invoice_id, account_id=i.account_id, total=i.total) for i in invoices
        ),
        total=sum((i.total for i in invoices), Decimal("0.00")),
        records=len(invoices),
    )


def aborted(*, revision: int = 1, period: Period = OCTOBER) -> ReportAborted:
    return ReportAborted(
        report_id=report_id(period.period_id, revision),
        revision=revision,
        period=period,
        reasons=(AbortReason(code=AbortCode.DEADLINE, message="no reply within 30s", service="storage"),),
    )
