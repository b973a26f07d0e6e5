"""Corrections: a forced replay of a completed period cancels each invoice it issued before with a
credit note, then issues the corrected invoice naming the one it supersedes."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from accounting.core.invoices import invoice_for
from accounting.core.rate_card import RateCard
from contracts import CreditNoteIssued, InvoiceIssued, Period, credit_note_id


def supersede(
    invoices: Sequence[InvoiceIssued],
    previous: Sequence[InvoiceIssued],
    *,
    report_id: UUID,
    revision: int,
    period: Period,
    card: RateCard,
) -> tuple[InvoiceIssued, ...]:
    """Each new invoice names the previous invoice of its account; an account that no longer has
    usage gets an empty invoice superseding its old one, so every earlier invoice is corrected.
    """
    if not previous:
        return tuple(invoices)
    before = {invoice.account_id: invoice for invoice in previous}
    covered = {invoice.account_id for invoice in invoices}
    corrected = [
        invoice.model_copy(update={"supersedes": before[invoice.account_id].invoice_id})
        if invoice.account_id in before
        else invoice
        for invoice in invoices
    ]
    corrected.extend(
        empty_correction(
            account, old.invoice_id, report_id=report_id, revision=revision, period=period, card=card
        )
        for account, old in sorted(before.items())
        if account not in covered
    )
    return tuple(sorted(corrected, key=lambda invoice: invoice.account_id))


def credit_note_for(credited: InvoiceIssued, *, report_id: UUID, revision: int) -> CreditNoteIssued:
    """The credit note with which ``revision`` cancels ``credited`` in full: its lines and total."""
    return CreditNoteIssued(
        credit_note_id=credit_note_id(credited.account_id, credited.period.period_id, revision),
        credits=credited.invoice_id,
        report_id=report_id,
        revision=revision,
        account_id=credited.account_id,
        period=credited.period,
        currency=credited.currency,
        lines=credited.lines,
        subtotal=credited.subtotal,
        total=credited.total,
    )


def empty_correction(
    account: str, superseded: UUID, *, report_id: UUID, revision: int, period: Period, card: RateCard
) -> InvoiceIssued:
    """The invoice of an account that had usage in the superseded revision and has none now."""
    return invoice_for(
        account, (), report_id=report_id, revision=revision, period=period, card=card, supersedes=superseded
    )
