"""Reads what an invoice or credit note document is made of from the accounting store."""

from __future__ import annotations

from typing import Protocol, TypeVar
from uuid import UUID

from accounting.documents.model import CreditNoteDocument, Document, InvoiceDocument
from accounting.store.reports import ReportRecord
from contracts import CreditNoteIssued, InvoiceIssued, invoice_id

T = TypeVar("T")

MAX_CHAIN = 10_000
"""More corrections of one account's invoice than any period has revisions: a loop in the store."""


class DocumentSource(Protocol):
    """The part of :class:`~accounting.store.repository.ReportStore` a document is read from."""

    async def get(self, report_id: UUID) -> ReportRecord | None: ...

    async def invoices(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        invoice_id: UUID | None = None,
        account_id: str | None = None,
        drafts: bool = False,
    ) -> list[InvoiceIssued]: ...

    async def credit_notes(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        credit_note_id: UUID | None = None,
        credits: UUID | None = None,
        drafts: bool = False,
    ) -> list[CreditNoteIssued]: ...


async def load_document(store: DocumentSource, document_id: UUID) -> Document | None:
    """The invoice or credit note ``document_id`` with the corrections around it; None if neither
    is in the store (issued documents, and a draft's: rendered as DRAFT)."""
    invoices = await store.invoices(invoice_id=document_id, drafts=True)
    if invoices:
        return await _invoice_document(store, invoices[0])
    notes = await store.credit_notes(credit_note_id=document_id, drafts=True)
    if notes:
        return await _credit_note_document(store, notes[0])
    return None


async def _invoice_document(store: DocumentSource, invoice: InvoiceIssued) -> InvoiceDocument:
    corrects: InvoiceIssued | None = None
    credit_note: CreditNoteIssued | None = None
    if invoice.supersedes is not None:
        corrects = await _invoice(store, invoice.supersedes)
        credit_note = _first(await store.credit_notes(credits=invoice.supersedes))
    credited_by = _first(await store.credit_notes(credits=invoice.invoice_id))
    corrected_by = None if credited_by is None else await _correction(store, credited_by)
    return InvoiceDocument(
        invoice=invoice,
        report_status=await _status(store, invoice.report_id),
        corrects=corrects,
        credit_note=credit_note,
        credited_by=credited_by,
        corrected_by=corrected_by,
        owed_now=None if corrected_by is None else await _owed_now(store, corrected_by),
    )


async def _owed_now(store: DocumentSource, correction: InvoiceIssued) -> InvoiceIssued | None:
    """The end of the chain of corrections from ``correction``: the first invoice no credit note
    cancels (what the account owes now), or None when the chain ends in a cancellation."""
    current = correction
    for _ in range(MAX_CHAIN):
        cancelled_by = _first(await store.credit_notes(credits=current.invoice_id))
        if cancelled_by is None:
            return current
        following = await _correction(store, cancelled_by)
        if following is None:
            return None
        current = following
    raise RuntimeError(f"invoice {correction.invoice_id}: more than {MAX_CHAIN} corrections in a row")


async def _credit_note_document(store: DocumentSource, note: CreditNoteIssued) -> CreditNoteDocument:
    credited = await _invoice(store, note.credits)
    return CreditNoteDocument(
        credit_note=note,
        report_status=await _status(store, note.report_id),
        credited=credited,
        correction=await _correction(store, note),
    )


async def _invoice(store: DocumentSource, wanted: UUID) -> InvoiceIssued | None:
    return _first(await store.invoices(invoice_id=wanted))


async def _correction(store: DocumentSource, note: CreditNoteIssued) -> InvoiceIssued | None:
    """The corrected invoice issued with ``note`` (the one superseding the invoice it credits).

    The revision that issues a credit note issues the correction too, under the account's
    deterministic invoice id of that revision: one look-up, not a scan of a period's invoices (a
    hundred thousand at scale). Should that id not be it, the account's invoices of that revision
    are searched.
    """
    expected = await _invoice(store, invoice_id(note.account_id, note.period.period_id, note.revision))
    if expected is not None and expected.supersedes == note.credits:
        return expected
    issued_with = await store.invoices(report_id=note.report_id, account_id=note.account_id)
    return _first([other for other in issued_with if other.supersedes == note.credits])


async def _status(store: DocumentSource, report_id: UUID) -> str:
    record = await store.get(report_id)
    return "unknown" if record is None else str(record.status.value)


def _first(items: list[T]) -> T | None:
    return items[0] if items else None
