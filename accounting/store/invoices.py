"""A report's invoices, credit notes and the events that finish it, written with their outbox rows.

Invoices (and, in a forced replay, the credit notes cancelling what they correct) are written in
batches while a report is priced, as draft bodies with outbox rows the relay cannot see yet
(``ready`` false); the transaction that moves the report to PUBLISHING numbers and dates them and
makes them all visible at once, with the report's own event (``final``) after them. A report
that waits for approval stays a DRAFT, stored whole and unnumbered, until then. So a report's
invoices go out all or none, and an aborted report never has any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import DEFAULT_NUMBERING, Numbering
from accounting.store import schema
from accounting.store.engine import Renewal, fence, insert_rows, refresh_statistics, renew_at_commit
from accounting.store.issuing import Approval, Issued, issue_documents, record_approval
from accounting.store.reports import ACTIVE, transition
from contracts import (
    ROUTING_CREDIT_NOTE_ISSUED,
    ROUTING_INVOICE_CORRECTED,
    ROUTING_INVOICE_ISSUED,
    ROUTING_REPORT_ABORTED,
    ROUTING_REPORT_COMPLETED,
    CreditNoteIssued,
    InvoiceIssued,
    Message,
    ReportAborted,
    ReportCompleted,
)

AUTOMATIC = "auto"
"""Who approved a report issued without a reviewer (``approval = "auto"``)."""


@dataclass(frozen=True)
class StagedInvoice:
    """One priced invoice, serialised once: the body stored is the body published."""

    invoice_id: UUID
    account_id: str
    total: str
    supersedes: UUID | None
    body: str


@dataclass(frozen=True)
class StagedCreditNote:
    """A credit note cancelling the invoice ``credits``; relayed before the invoice correcting it."""

    credit_note_id: UUID
    account_id: str
    credits: UUID
    currency: str
    total: str
    body: str


_CREDIT_NOTE_COLUMNS = (
    "credit_note_id",
    "report_id",
    "period_id",
    "revision",
    "account_id",
    "credits",
    "currency",
    "total",
    "body",
)
_INVOICE_COLUMNS = (
    "invoice_id",
    "report_id",
    "period_id",
    "revision",
    "account_id",
    "currency",
    "total",
    "supersedes",
    "body",
)
_OUTBOX_COLUMNS = (
    "report_id",
    "message_id",
    "exchange",
    "routing_key",
    "message_type",
    "mandatory",
    "body",
    "created_at",
    "attempts",
    "ready",
    "final",
)


class InvoicesRepository:
    engine: AsyncEngine

    async def clear_staged(self, report_id: UUID, owner: str) -> None:
        """Drop the invoice batches of an earlier attempt at pricing this report."""
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, (ReportStatus.PRICING,))
            await drop_staged(connection, report_id)

    async def stage_invoices(
        self,
        report_id: UUID,
        owner: str,
        *,
        period_id: str,
        revision: int,
        currency: str,
        invoices: Sequence[StagedInvoice],
        at: datetime,
        credit_notes: Sequence[StagedCreditNote] = (),
        renewal: Renewal | None = None,
    ) -> None:
        """Write a batch of invoices and credit notes and their (not yet ready) outbox rows, fenced
        by the lease (and renewing it as it commits, given ``renewal``). A first invoice goes out
        on ``invoice.issued``; a correction on ``invoice.corrected``, right after the credit note
        (``credit_note.issued``) of its account."""
        rows = [
            (
                str(invoice.invoice_id),
                str(report_id),
                period_id,
                revision,
                invoice.account_id,
                currency,
                invoice.total,
                None if invoice.supersedes is None else str(invoice.supersedes),
                invoice.body,
            )
            for invoice in invoices
        ]
        notes = [
            (
                str(note.credit_note_id),
                str(report_id),
                period_id,
                revision,
                note.account_id,
                str(note.credits),
                note.currency,
                note.total,
                note.body,
            )
            for note in credit_notes
        ]
        note_of = {note.account_id: note for note in credit_notes}
        outbox: list[tuple[Any, ...]] = []
        for invoice in invoices:
            note = note_of.pop(invoice.account_id, None)
            if note is not None:
                outbox.append(_outbox_entry(report_id, note.credit_note_id, ROUTING_CREDIT_NOTE_ISSUED, at))
            routing_key = ROUTING_INVOICE_ISSUED if invoice.supersedes is None else ROUTING_INVOICE_CORRECTED
            outbox.append(_outbox_entry(report_id, invoice.invoice_id, routing_key, at))
        outbox.extend(
            _outbox_entry(report_id, note.credit_note_id, ROUTING_CREDIT_NOTE_ISSUED, at)
            for note in note_of.values()
        )
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, (ReportStatus.PRICING,))
            await insert_rows(connection, schema.invoices, _INVOICE_COLUMNS, rows)
            await insert_rows(connection, schema.credit_notes, _CREDIT_NOTE_COLUMNS, notes)
            await insert_rows(connection, schema.outbox, _OUTBOX_COLUMNS, outbox)
            await renew_at_commit(connection, report_id, owner, (ReportStatus.PRICING,), renewal)

    async def finish_completed(
        self,
        report_id: UUID,
        completed: ReportCompleted,
        at: datetime,
        reason: str,
        *,
        owner: str | None = None,
        rate_card: Mapping[str, Any] | None = None,
        numbering: Numbering | None = DEFAULT_NUMBERING,
    ) -> Issued | None:
        """PRICING → PUBLISHING, approved automatically: the staged documents are numbered and
        dated with ``numbering`` and become visible to the relay, with ReportCompleted queued after
        them. With ``numbering`` None, PRICING → DRAFT instead: everything is stored, nothing is
        numbered or ready until the draft is approved. Either way the rate card that priced the
        report is kept with it."""
        async with self.engine.begin() as connection:
            if owner is not None:
                await fence(connection, report_id, owner, (ReportStatus.PRICING,))
            draft = numbering is None
            await enqueue(connection, report_id, ROUTING_REPORT_COMPLETED, completed, at, ready=not draft)
            issued = None
            if numbering is not None:
                issued = await issue_documents(connection, report_id, numbering, at)
                await record_approval(connection, Approval(report_id, "approved", AUTOMATIC, at))
            await connection.execute(
                update(schema.reports)
                .where(schema.reports.c.report_id == str(report_id))
                .values(
                    currency=completed.currency,
                    total=str(completed.total),
                    rate_card=None if rate_card is None else dict(rate_card),
                )
            )
            status = ReportStatus.DRAFT if draft else ReportStatus.PUBLISHING
            await transition(connection, report_id, status, at, reason, owner=owner)
        await refresh_statistics(self.engine, schema.outbox, schema.invoices)
        return issued

    async def finish_aborted(
        self,
        report_id: UUID,
        aborted: ReportAborted,
        at: datetime,
        reason: str,
        *,
        owner: str | None = None,
        collect_until: datetime | None = None,
    ) -> None:
        """→ ABORTED, with ReportAborted in the outbox in the same transaction and any invoice
        batches dropped. With ``collect_until`` the builder keeps its lease that long, to go on
        storing the answers of the services that had not failed (what a replay reuses)."""
        async with self.engine.begin() as connection:
            if owner is not None:
                await fence(connection, report_id, owner, ACTIVE)
            await drop_staged(connection, report_id)
            await enqueue(connection, report_id, ROUTING_REPORT_ABORTED, aborted, at)
            await transition(
                connection,
                report_id,
                ReportStatus.ABORTED,
                at,
                reason,
                owner=owner,
                lease_until=collect_until,
            )


async def enqueue(
    connection: AsyncConnection,
    report_id: UUID,
    routing_key: str,
    message: Message,
    at: datetime,
    *,
    ready: bool = True,
) -> None:
    """Queue a report's own event, relayed after every other row of the report (a draft's waits,
    not ``ready``, until it is approved: ``issue_documents`` then sets its ``ready_at``)."""
    await connection.execute(
        schema.outbox.insert().values(
            report_id=str(report_id),
            message_id=f"{report_id}/{routing_key}",
            exchange="reports",
            routing_key=routing_key,
            message_type=type(message).__name__,
            mandatory=False,
            body=message.model_dump_json(),
            created_at=at,
            attempts=0,
            ready=ready,
            ready_at=at if ready else None,
            final=True,
        )
    )


def _outbox_entry(report_id: UUID, message_id: UUID, routing_key: str, at: datetime) -> tuple[Any, ...]:
    """An outbox row (not ready yet) for an invoice or credit note whose body lives in its table."""
    credit_note = routing_key == ROUTING_CREDIT_NOTE_ISSUED
    message_type = (CreditNoteIssued if credit_note else InvoiceIssued).__name__
    return (
        str(report_id),
        str(message_id),
        "invoices",
        routing_key,
        message_type,
        True,
        None,
        at,
        0,
        False,
        False,
    )


async def drop_staged(connection: AsyncConnection, report_id: UUID) -> None:
    outbox = schema.outbox
    await connection.execute(
        delete(outbox).where(outbox.c.report_id == str(report_id), outbox.c.ready.is_(False))
    )
    await connection.execute(delete(schema.invoices).where(schema.invoices.c.report_id == str(report_id)))
    await connection.execute(
        delete(schema.credit_notes).where(schema.credit_notes.c.report_id == str(report_id))
    )
