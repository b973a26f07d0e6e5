"""What the audit of ``reports reconcile`` reads: a period's issued documents as stored (row and
body), a window of accounts at a time, and a gather's raw replies with their stored digests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.core.audit import CreditNoteRow, InvoiceRow
from accounting.store import schema
from accounting.store.issued import issued_only


@dataclass(frozen=True)
class StoredChunk:
    id: int
    service: str
    seq: int | None
    body: str
    sha256: str | None


class AuditRepository:
    engine: AsyncEngine

    async def documents_window(
        self,
        period_id: str,
        max_revision: int,
        after: str,
        limit: int,
        account: str | None = None,
        *,
        drafts: bool = False,
    ) -> tuple[list[InvoiceRow], list[CreditNoteRow], str | None]:
        """Invoices and credit notes of issued revisions up to ``max_revision`` of the period, for
        the next ``limit`` accounts after ``after`` (in account order; ``account`` alone when
        given), and the last of those accounts (None: no more accounts). With ``drafts``, a draft's
        documents are read as if issued (reconciling the draft)."""
        invoices, notes = schema.invoices, schema.credit_notes
        wanted = _issued_only(
            select(invoices.c.account_id).distinct(), invoices, period_id, max_revision, drafts
        )
        if account is not None:
            wanted = wanted.where(invoices.c.account_id == account)
        wanted = wanted.where(invoices.c.account_id > after).order_by(invoices.c.account_id).limit(limit)
        async with self.engine.connect() as connection:
            accounts = (await connection.execute(wanted)).scalars().all()
            if not accounts:
                return [], [], None
            upto = accounts[-1]
            invoice_rows = (
                await connection.execute(
                    _issued_only(select(invoices), invoices, period_id, max_revision, drafts)
                    .where(invoices.c.account_id > after, invoices.c.account_id <= upto)
                    .order_by(invoices.c.account_id, invoices.c.revision)
                )
            ).all()
            note_rows = (
                await connection.execute(
                    _issued_only(select(notes), notes, period_id, max_revision, drafts)
                    .where(notes.c.account_id > after, notes.c.account_id <= upto)
                    .order_by(notes.c.account_id, notes.c.revision)
                )
            ).all()
        return (
            [
                InvoiceRow(
                    row.invoice_id,
                    row.report_id,
                    row.revision,
                    row.account_id,
                    row.currency,
                    row.total,
                    row.supersedes,
                    row.body,
                )
                for row in invoice_rows
            ],
            [
                CreditNoteRow(
                    row.credit_note_id,
                    row.report_id,
                    row.revision,
                    row.account_id,
                    row.credits,
                    row.currency,
                    row.total,
                    row.body,
                )
                for row in note_rows
            ],
            upto if len(accounts) == limit else None,
        )

    async def stored_chunks(self, gather_id: int, after_id: int, limit: int) -> list[StoredChunk]:
        """The gather's raw replies (accepted or not) after ``after_id``, in the order stored."""
        chunks = schema.reply_chunks
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(chunks.c.id, chunks.c.service, chunks.c.seq, chunks.c.body, chunks.c.sha256)
                    .where(chunks.c.gather_id == gather_id, chunks.c.id > after_id)
                    .order_by(chunks.c.id)
                    .limit(limit)
                )
            ).all()
        return [StoredChunk(row.id, row.service, row.seq, row.body, row.sha256) for row in rows]


def _issued_only(
    query: Select[Any], table: Table, period_id: str, max_revision: int, drafts: bool
) -> Select[Any]:
    """``query`` over ``table`` (invoices or credit notes) limited to issued revisions of the period."""
    return issued_only(query, table, drafts=drafts).where(
        table.c.period_id == period_id, table.c.revision <= max_revision
    )
