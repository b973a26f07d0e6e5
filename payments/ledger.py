"""Where a payment consumer records the invoices and credit notes it has handled: in memory, or
durably in SQL. Both are "documents"; a credit note's id is recorded like an invoice's.

``handle_once(document, work)`` runs ``work`` and records the document id **in one transaction**:

- the id is inserted first (``INSERT … ON CONFLICT DO NOTHING``), which takes SQLite's write lock
  or PostgreSQL's row lock at once: a second consumer handling the same invoice at the same time
  waits, then finds it recorded and skips it;
- ``work(tx)`` then runs with that transaction: whatever it writes through ``tx`` commits
  together with the id, or not at all;
- if ``work`` raises, the transaction rolls back: the id stays unrecorded and a redelivery
  handles the invoice again.

So, per effect of the handler:

- writes through ``tx`` (the payment row, in the same database): **exactly once**, through
  crashes, redeliveries, restarts and several consumers on one database;
- anything else (an HTTP call, a print): **at least once, never skipped** — it ran before the
  commit, so a crash between its end and the commit repeats it on the redelivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import Column, DateTime, MetaData, String, Table, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from contracts import CreditNoteIssued, InvoiceIssued

Document = InvoiceIssued | CreditNoteIssued
"""What a payment service is sent: an invoice (first or corrected) or a credit note."""


def document_id(document: Document) -> UUID:
    return document.invoice_id if isinstance(document, InvoiceIssued) else document.credit_note_id


MONEY = Context(prec=120, traps=[Inexact, InvalidOperation, Overflow])
"""Balances are summed exactly: an amount may have more digits than the default context's 28."""


def add_money(a: Decimal, b: Decimal) -> Decimal:
    return MONEY.add(a, b)


def amount_owed(document: Document) -> Decimal:
    """What the document adds to the account's balance: an invoice's total, minus a credit note's."""
    return document.total if isinstance(document, InvoiceIssued) else -document.total


Work = Callable[[AsyncConnection | None], Awaitable[None]]
"""What handling an invoice means; given the ledger's transaction (None in memory)."""

metadata = MetaData()

handled_invoices = Table(
    "handled_invoices",
    metadata,
    Column("invoice_id", String(36), primary_key=True),  # or a credit note's id
    Column("account_id", String(128), nullable=False),
    Column("report_id", String(36), nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("invoice_id", String(36), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("amount", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""The example payment service's own table (see ``record_payment``): one row per document, the
amount it adds to what the account owes (negative for a credit note; ``invoice_id`` is then the
credit note's id)."""


class Ledger(Protocol):
    """The record of handled document ids."""

    async def handle_once(self, document: Document, work: Work) -> bool:
        """Run ``work`` and record the document as handled, atomically; False (``work`` not run)
        if it was already handled. An exception from ``work`` leaves it unrecorded."""
        ...

    async def close(self) -> None: ...


class MemoryLedger:
    """Handled ids in a set: lost on restart (the demo and tests). Invoices are handled one at a
    time, so two copies delivered together are never both handled."""

    def __init__(self) -> None:
        self.handled: set[UUID] = set()
        self._lock = asyncio.Lock()

    async def handle_once(self, document: Document, work: Work) -> bool:
        async with self._lock:
            if document_id(document) in self.handled:
                return False
            await work(None)
            self.handled.add(document_id(document))
            return True

    async def close(self) -> None:
        return None


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class SqlLedger:
    """Handled ids in a table ``handled_invoices`` of SQLite (default) or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, busy_timeout: float = 30.0) -> SqlLedger:
        """The SQLite file at ``path`` (created, with its directory, if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(sqlite_url(path), connect_args={"timeout": busy_timeout})

        @event.listens_for(engine.sync_engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return await cls._ready(engine)

    @classmethod
    async def open_url(cls, url: str) -> SqlLedger:
        """Any SQLAlchemy async URL: ``postgresql+asyncpg://…`` for a payment service in production."""
        return await cls._ready(create_async_engine(url, pool_pre_ping=True))

    @classmethod
    async def _ready(cls, engine: AsyncEngine) -> SqlLedger:
        try:
            async with engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def handle_once(self, document: Document, work: Work) -> bool:
        values = {
            "invoice_id": str(document_id(document)),
            "account_id": document.account_id,
            "report_id": str(document.report_id),
            "handled_at": datetime.now(UTC),
        }
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        claim = dialect.insert(handled_invoices).values(**values).on_conflict_do_nothing()
        # One handler at a time in this process (SQLite has one writer anyway); other processes
        # wait on the database's lock, taken by the INSERT that starts the transaction.
        async with self._lock, self.engine.begin() as tx:
            if (await tx.execute(claim)).rowcount == 0:
                return False
            await work(tx)
            return True

    async def is_handled(self, invoice_id: UUID) -> bool:
        async with self.engine.connect() as connection:
            query = select(handled_invoices.c.invoice_id).where(
                handled_invoices.c.invoice_id == str(invoice_id)
            )
            return (await connection.execute(query)).first() is not None

    async def count(self) -> int:
        async with self.engine.connect() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(handled_invoices))).scalar_one()
            )

    async def balance(self, account_id: str) -> dict[str, Decimal]:
        """What the account owes per currency, from the rows ``record_payment`` wrote: after a
        correction (credit note, then corrected invoice) it is what the corrected invoice says."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(payments.c.currency, payments.c.amount).where(payments.c.account_id == account_id)
                )
            ).all()
        owed: dict[str, Decimal] = {}
        for currency, amount in rows:
            owed[currency] = add_money(owed.get(currency, Decimal(0)), Decimal(amount))
        return owed

    async def close(self) -> None:
        await self.engine.dispose()


async def record_payment(document: Document, tx: AsyncConnection) -> None:
    """The example of a handler given the transaction: the row commits with the document id, so
    each invoice charges, and each credit note refunds, exactly once."""
    await tx.execute(
        payments.insert().values(
            invoice_id=str(document_id(document)),
            account_id=document.account_id,
            amount=str(amount_owed(document)),
            currency=document.currency,
            created_at=datetime.now(UTC),
        )
    )
