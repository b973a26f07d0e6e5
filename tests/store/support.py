"""What the store tests share: the test clock, sample messages, and reports built up to a status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import pytest
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import DRAFT_INVOICE_FIELDS
from accounting.store import invoices as invoices_store
from accounting.store import replies as replies_store
from accounting.store import schema
from accounting.store.engine import create_engine, insert_rows
from accounting.store.migrate import upgrade
from accounting.store.repository import ChunkToStore, RecordRow, ReportRecord, ReportStore, StagedInvoice
from contracts import (
    AbortCode,
    AbortReason,
    CreditNoteIssued,
    InvoiceIssued,
    InvoiceLine,
    Period,
    ReportAborted,
    ReportCompleted,
    invoice_id,
    report_id,
)

T = TypeVar("T", InvoiceIssued, CreditNoteIssued)

OCTOBER = Period.month("2026-10")
NOVEMBER = Period.month("2026-11")
T0 = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
"""The tests' clock starts here: five minutes after October closed."""

A, B = "coordinator-a", "coordinator-b"
"""Two coordinators; reports are built by ``A`` unless a test says otherwise."""

ACTIVE = [ReportStatus.PENDING, ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING]
PATH = {
    ReportStatus.PENDING: [],
    ReportStatus.GATHERING: [ReportStatus.GATHERING],
    ReportStatus.NORMALIZING: [ReportStatus.GATHERING, ReportStatus.NORMALIZING],
    ReportStatus.PRICING: [ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING],
}
"""How a new (PENDING) report reaches each active status."""


def minutes(n: float) -> datetime:
    """``n`` minutes after ``T0``."""
    return T0 + timedelta(minutes=n)


@dataclass(frozen=True)
class Backend:
    """Where one test's database lives: a SQLite file, or a PostgreSQL schema of its own."""

    name: str
    url: str
    schema: str | None = None

    def engine(self) -> AsyncEngine:
        """A new engine on this database, its schema as it is (not migrated)."""
        if self.schema is None:
            return create_engine(self.url)
        return create_async_engine(self.url, connect_args={"server_settings": {"search_path": self.schema}})

    async def open(self) -> ReportStore:
        """Another store on this database, migrated to the newest revision."""
        engine = self.engine()
        try:
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return ReportStore(engine)


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
        rate_card="sha256:" + "0" * 64,
    )


def staged(invoices: Sequence[InvoiceIssued]) -> list[StagedInvoice]:
    return [
        StagedInvoice(
            i.invoice_id,
            i.account_id,
            str(i.total),
            i.supersedes,
            i.model_dump_json(exclude=DRAFT_INVOICE_FIELDS),
        )
        for i in invoices
    ]


def unstamped(documents: Sequence[T]) -> list[T]:
    """Issued documents without the number and dates their issue stamped on them (to compare
    with the documents as priced)."""
    blank = {"number": None, "issued_at": None, "due_at": None}
    return [
        document.model_copy(update={name: None for name in blank if name in type(document).model_fields})
        for document in documents
    ]


def completed(
    invoices: Sequence[InvoiceIssued], *, revision: int = 1, period: Period = OCTOBER
) -> ReportCompleted:
    return ReportCompleted(
        report_id=report_id(period.period_id, revision),
        revision=revision,
        period=period,
        currency="EUR",
        invoice_count=len(invoices),
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


def reply_body(service: str, seq: int, records: Sequence[RecordRow], *, last: bool = True) -> str:
    """A service's UsageReply chunk as it arrives on the wire."""
    return json.dumps(
        {
            "schema_version": "1.1",
            "request_id": f"req-{service}",
            "service": service,
            "status": "ok",
            "records": [
                {
                    "account_id": account,
                    "resource_id": resource,
                    "resource_type": "vm",
                    "metric": metric,
                    "unit": unit,
                    "quantity": quantity,
                }
                for account, resource, metric, unit, quantity in records
            ],
            "chunk": {"seq": seq, "last": last, "total_records": len(records)},
        }
    )


def chunk(service: str, seq: int, records: Sequence[RecordRow]) -> ChunkToStore:
    """An accepted chunk with its records."""
    return ChunkToStore(service, f"req-{service}", seq, reply_body(service, seq, records), records)


def record(account: str, resource: str = "vm-1", metric: str = "vcpu_seconds") -> RecordRow:
    return (account, resource, metric, "vCPU-s", "3600")


# --- reports at a given status ---------------------------------------------------------------------


async def new_report(
    store: ReportStore,
    *,
    revision: int = 1,
    period: Period = OCTOBER,
    at: datetime = T0,
    owner: str | None = A,
    lease_until: datetime | None = None,
    services: Sequence[str] = ("compute", "storage"),
    requested: Sequence[str] | None = None,
    carried_from: UUID | None = None,
) -> ReportRecord:
    return await store.create_report(
        report_id=report_id(period.period_id, revision),
        period=period,
        revision=revision,
        services=services,
        requested=services if requested is None else requested,
        at=at,
        reason="PeriodClosed from scheduler",
        owner=owner,
        lease_until=lease_until,
        carried_from=carried_from,
    )


async def advance(store: ReportStore, rid: UUID, to: ReportStatus, owner: str | None = None) -> None:
    """Move a PENDING report along the happy path up to ``to`` (an active status)."""
    for step, status in enumerate(PATH[to], start=1):
        await store.move(rid, status, minutes(step), f"to {status}", owner=owner)


async def report_at(
    store: ReportStore, to: ReportStatus, *, revision: int = 1, period: Period = OCTOBER, **options: Any
) -> ReportRecord:
    """A report of ``A`` moved (by ``A``) up to ``to``."""
    record = await new_report(store, revision=revision, period=period, lease_until=minutes(60), **options)
    await advance(store, record.report_id, to, owner=record.owner)
    return record


async def priced_report(
    store: ReportStore, *, accounts: int = 2, revision: int = 1, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...], ReportCompleted]:
    """A report in PRICING with its invoices staged and its ReportCompleted ready to be finished."""
    record = await report_at(store, ReportStatus.PRICING, revision=revision, period=period)
    invoices = tuple(
        invoice(f"acct-{n:05d}", f"{n}.{n % 100:02d}", revision=revision, period=period)
        for n in range(1, accounts + 1)
    )
    for start in range(0, len(invoices), 500):
        await store.stage_invoices(
            record.report_id,
            A,
            period_id=period.period_id,
            revision=revision,
            currency="EUR",
            invoices=staged(invoices[start : start + 500]),
            at=minutes(9),
        )
    return record, invoices, completed(invoices, revision=revision, period=period)


async def publishing_report(
    store: ReportStore, *, accounts: int = 2, revision: int = 1, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...], ReportCompleted]:
    """A report in PUBLISHING: one ready outbox row per invoice, then its ReportCompleted."""
    record, invoices, done = await priced_report(store, accounts=accounts, revision=revision, period=period)
    await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=A)
    return record, invoices, done


async def aborted_report(store: ReportStore, *, period: Period = OCTOBER) -> ReportRecord:
    """A report aborted while gathering: its outbox holds ReportAborted alone."""
    record = await report_at(store, ReportStatus.GATHERING, period=period)
    await store.finish_aborted(record.report_id, aborted(period=period), minutes(3), "deadline", owner=A)
    return record


async def get(store: ReportStore, rid: UUID) -> ReportRecord:
    record = await store.get(rid)
    assert record is not None
    return record


async def status(store: ReportStore, rid: UUID) -> ReportStatus:
    return (await get(store, rid)).status


async def count(store: ReportStore, table: str, **where: Any) -> int:
    """Rows of a store table matching ``column=value`` for each keyword."""
    columns = schema.metadata.tables[table].c
    query = select(func.count()).select_from(schema.metadata.tables[table])
    for column, value in where.items():
        query = query.where(columns[column] == value)
    async with store.engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


# --- real concurrency on PostgreSQL ----------------------------------------------------------------


@asynccontextmanager
async def queued(store: ReportStore, backend: Backend, table: str, waiters: int) -> AsyncIterator[None]:
    """Hold ``table`` until ``waiters`` transactions wait for it, then let them all go at once.

    On PostgreSQL this starts concurrent transactions at the same instant, the way coordinators or
    relays racing each other would. SQLite lets one writer in at a time, so there is nothing to line
    up: it holds nothing (the tasks still interleave on the event loop).
    """
    if backend.name != "postgresql":
        yield
        return
    async with store.engine.connect() as holder:
        await holder.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        pid = (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        yield
        for _ in range(1000):
            async with store.engine.connect() as probe:
                blocked = await probe.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                    {"pid": pid},
                )
                if blocked.scalar_one() >= waiters:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"fewer than {waiters} transactions ever waited for {table}")
        await holder.commit()


async def tamper(url: str, statement: Any) -> None:
    """Change a stored row behind the store's back, as someone with the database's password could."""
    store = await ReportStore.open(url)
    try:
        async with store.engine.begin() as transaction:
            await transaction.execute(statement)
    finally:
        await store.close()


# --- a store made slow on purpose ------------------------------------------------------------------


def slow_inserts(monkeypatch: pytest.MonkeyPatch, seconds: float, *tables: Table) -> None:
    """Every bulk insert into ``tables`` (a window's ``outbox`` rows, a batch's ``usage_records``)
    spends ``seconds`` inside its transaction first: a write as long as a store under load makes it."""

    async def slow_insert(
        connection: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if table in tables:
            await asyncio.sleep(seconds)
        await insert_rows(connection, table, columns, rows)

    monkeypatch.setattr(invoices_store, "insert_rows", slow_insert)
    monkeypatch.setattr(replies_store, "insert_rows", slow_insert)
