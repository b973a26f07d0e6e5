"""Reading a period's issued invoices and credit notes (and, for a reviewer, a draft's).

Only documents of reports publishing or completed exist for the world; a draft's are read only
where a caller asks for them (``drafts``): reconciling, diffing or rendering the draft.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from sqlalchemy import Select, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema
from contracts import CreditNoteIssued, InvoiceIssued

ISSUED = (ReportStatus.PUBLISHING, ReportStatus.COMPLETED)
"""Statuses whose invoices exist for the world (not the batches of a report still being priced)."""


def issued_only(query: Select[Any], table: Table, *, drafts: bool = False) -> Select[Any]:
    """``query`` over ``table`` (invoices or credit notes) limited to rows of issued reports (and
    of drafts awaiting approval, with ``drafts``: what a reviewer reconciles and renders)."""
    reports = schema.reports
    statuses = (*ISSUED, ReportStatus.DRAFT) if drafts else ISSUED
    return query.join(reports, reports.c.report_id == table.c.report_id).where(
        reports.c.status.in_([status.value for status in statuses])
    )


class IssuedDocumentsRepository:
    engine: AsyncEngine

    async def invoices(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        invoice_id: UUID | None = None,
        account_id: str | None = None,
        drafts: bool = False,
    ) -> list[InvoiceIssued]:
        """Issued invoices (of reports publishing or completed; with ``drafts``, of drafts too), by
        report, period, id or account."""
        table = schema.invoices
        bodies = await self._issued(
            table,
            drafts,
            report_id=report_id,
            period_id=period_id,
            invoice_id=invoice_id,
            account_id=account_id,
        )
        return [InvoiceIssued.model_validate_json(body) for body in bodies]

    async def credit_notes(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        credit_note_id: UUID | None = None,
        credits: UUID | None = None,
        drafts: bool = False,
    ) -> list[CreditNoteIssued]:
        """Issued credit notes (of reports publishing or completed; with ``drafts``, of drafts
        too), by report, period, id, or the invoice they cancel."""
        table = schema.credit_notes
        bodies = await self._issued(
            table,
            drafts,
            report_id=report_id,
            period_id=period_id,
            credit_note_id=credit_note_id,
            credits=credits,
        )
        return [CreditNoteIssued.model_validate_json(body) for body in bodies]

    async def _issued(self, table: Table, drafts: bool, **equal: UUID | str | None) -> list[str]:
        """Bodies of ``table``'s rows of issued reports whose columns equal the given values."""
        query = issued_only(select(table.c.body), table, drafts=drafts).order_by(
            table.c.period_id, table.c.revision, table.c.account_id
        )
        for column, value in equal.items():
            if value is not None:
                query = query.where(table.c[column] == str(value))
        async with self.engine.connect() as connection:
            return [row.body for row in (await connection.execute(query)).all()]

    async def current_invoices(
        self,
        period_id: str,
        before_revision: int,
        *,
        after: str | None = None,
        upto: str | None = None,
        account_id: str | None = None,
        drafts: bool = False,
    ) -> dict[str, InvoiceIssued]:
        """Account → the invoice it owes now as of ``before_revision`` (excluded): its newest
        among the period's issued revisions before it. A correction revision issues an invoice only
        where the charge changed, so an account's current invoice may be of any earlier revision.
        Accounts in ``(after, upto]`` (None: unbounded) or ``account_id`` alone; a draft's invoices
        count only with ``drafts`` (reconciling the draft)."""
        table = schema.invoices
        query = _current(period_id, before_revision, drafts)
        if account_id is not None:
            query = query.where(table.c.account_id == account_id)
        if after is not None:
            query = query.where(table.c.account_id > after)
        if upto is not None:
            query = query.where(table.c.account_id <= upto)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        newest = {row.account_id: row.body for row in rows}  # in revision order: the newest wins
        return {account: InvoiceIssued.model_validate_json(body) for account, body in newest.items()}

    async def stream_current_invoices(
        self, period_id: str, before_revision: int, *, drafts: bool = False
    ) -> AsyncIterator[InvoiceIssued]:
        """Each account's current invoice as of ``before_revision`` (see ``current_invoices``),
        in account order, streamed: a period of any size is never held whole."""
        query = _current(period_id, before_revision, drafts).execution_options(yield_per=2_000)
        async with self.engine.connect() as connection:
            result = await connection.stream(query)
            newest: tuple[str, str] | None = None
            async for row in result:
                if newest is not None and newest[0] != row.account_id:
                    yield InvoiceIssued.model_validate_json(newest[1])
                newest = (row.account_id, row.body)
            if newest is not None:
                yield InvoiceIssued.model_validate_json(newest[1])


def _current(period_id: str, before_revision: int, drafts: bool) -> Select[Any]:
    """Every (account, invoice body) of the period's revisions before ``before_revision``, in
    account then revision order: the last row of each account is its current invoice."""
    table = schema.invoices
    return (
        issued_only(select(table.c.account_id, table.c.body), table, drafts=drafts)
        .where(table.c.period_id == period_id, table.c.revision < before_revision)
        .order_by(table.c.account_id, table.c.revision)
    )
