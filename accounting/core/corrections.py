"""Corrections: a forced replay of a completed period cancels each account's current invoice whose
charge changed with a credit note, then issues the corrected invoice naming the one it supersedes.
An account whose lines and totals are the same gets nothing: every credit note is one a finance
team must explain to a customer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from uuid import UUID

from accounting.core.invoices import invoice_for
from accounting.core.rate_card import RateCard
from contracts import CreditNoteIssued, InvoiceIssued, Period, credit_note_id


def same_charge(new: InvoiceIssued, old: InvoiceIssued) -> bool:
    """Whether ``new`` would tell the customer nothing ``old`` does not: the same lines (items,
    tiers, quantities, prices, amounts) and totals, in the same currency. Ids, revision, period
    and card fingerprint are not the charge."""
    charge = (new.currency, new.subtotal, new.total, new.lines)
    return charge == (old.currency, old.subtotal, old.total, old.lines)


def supersede(
    invoices: Sequence[InvoiceIssued],
    previous: Sequence[InvoiceIssued],
    *,
    report_id: UUID,
    revision: int,
    period: Period,
    card: RateCard,
) -> tuple[InvoiceIssued, ...]:
    """Each new invoice whose charge changed names the previous (current) invoice of its account;
    an account that no longer has usage gets an empty invoice superseding its old one, unless that
    one was empty already. An account whose charge is the same gets no new invoice.
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
        if invoice.account_id not in before or not same_charge(invoice, before[invoice.account_id])
    ]
    for account, old in sorted(before.items()):
        if account in covered:
            continue
        empty = empty_correction(
            account, old.invoice_id, report_id=report_id, revision=revision, period=period, card=card
        )
        if not same_charge(empty, old):
            corrected.append(empty)
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
        credits_number=credited.number,
    )


def empty_correction(
    account: str, superseded: UUID, *, report_id: UUID, revision: int, period: Period, card: RateCard
) -> InvoiceIssued:
    """The invoice of an account that had usage in the superseded revision and has none now."""
    return invoice_for(
        account, (), report_id=report_id, revision=revision, period=period, card=card, supersedes=superseded
    )


@dataclass(frozen=True)
class PlannedCorrection:
    """What a forced replay would do to one account (``reckon replay --dry-run``)."""

    account_id: str
    kind: Literal["corrected", "emptied", "new"]
    """``corrected``: a credit note and a corrected invoice; ``emptied``: no usage now, a credit
    note and an empty invoice; ``new``: a first invoice for an account that had none."""
    owed_now: Decimal
    owed_after: Decimal
    currency: str

    @property
    def change(self) -> Decimal:
        return self.owed_after - self.owed_now


def planned_corrections(
    current: Mapping[str, InvoiceIssued], priced: Mapping[str, InvoiceIssued]
) -> list[PlannedCorrection]:
    """Every account a forced replay would issue something for, by the rule ``price_window``
    applies: ``current`` is what each account owes now, ``priced`` what the new answers price to
    (an account absent from it has no usage now). Unchanged accounts are left out."""
    planned = []
    for account in sorted(current.keys() | priced.keys()):
        old, new = current.get(account), priced.get(account)
        if old is None:
            assert new is not None
            zero = Decimal(0).quantize(new.total)
            planned.append(PlannedCorrection(account, "new", zero, new.total, new.currency))
        elif new is None:
            if old.lines or old.total:
                zero = Decimal(0).quantize(old.total)
                planned.append(PlannedCorrection(account, "emptied", old.total, zero, old.currency))
        elif not same_charge(new, old):
            planned.append(PlannedCorrection(account, "corrected", old.total, new.total, new.currency))
    return planned
