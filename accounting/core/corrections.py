"""Corrected invoices: a forced replay of a completed period supersedes what was issued before."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from accounting.core.rate_card import RateCard
from contracts import InvoiceIssued, Period, invoice_id


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


def empty_correction(
    account: str, superseded: UUID, *, report_id: UUID, revision: int, period: Period, card: RateCard
) -> InvoiceIssued:
    """The invoice of an account that had usage in the superseded revision and has none now."""
    zero = card.round_money(Decimal(0))
    return InvoiceIssued.model_validate(
        {
            "invoice_id": invoice_id(account, period.period_id, revision),
            "report_id": report_id,
            "revision": revision,
            "account_id": account,
            "period": period,
            "currency": card.currency,
            "lines": (),
            "subtotal": zero,
            "total": zero,
            "supersedes": superseded,
        }
    )
