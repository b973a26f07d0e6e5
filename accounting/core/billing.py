"""Pricing a report a window of accounts at a time: the streamed path from stored records to
invoice and credit-note bodies, with the same normalizer, pricing and corrections as a report held
in memory.

Pure: the shell reads a window of records (sorted by account) and the superseded invoices of the
same accounts from the store, calls ``price_window`` (off the event loop), and writes the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from uuid import UUID

from accounting.core.corrections import credit_note_for, empty_correction, same_charge
from accounting.core.exact import exact_sum
from accounting.core.invoices import invoice_for, issued
from accounting.core.normalizer import Converter
from accounting.core.numbering import DRAFT_CREDIT_NOTE_FIELDS, DRAFT_INVOICE_FIELDS
from accounting.core.rate_card import RateCard
from accounting.core.report import ReportKey
from contracts import InvoiceIssued

UsageRow = tuple[str, str, str, str, str]
"""``(account_id, service, metric, unit, quantity)``, as the store gives them."""


@dataclass(frozen=True)
class PricedInvoice:
    """An invoice ready to store: ``body`` is its draft JSON, serialised once; issuing it appends
    its number and dates (``IssueStamp``)."""

    invoice_id: UUID
    account_id: str
    total: Decimal
    supersedes: UUID | None
    body: str


@dataclass(frozen=True)
class PricedCreditNote:
    """A credit note cancelling a superseded invoice, sent before the invoice that corrects it."""

    credit_note_id: UUID
    account_id: str
    credits: UUID
    currency: str
    total: Decimal
    body: str


@dataclass(frozen=True)
class PricedWindow:
    invoices: tuple[PricedInvoice, ...]
    credit_notes: tuple[PricedCreditNote, ...]
    total: Decimal
    """The exact sum of the window's invoice totals (each already rounded)."""
    records: int


def converter_for(key: ReportKey, card: RateCard) -> Converter:
    return Converter(key.period, card.billable_units, card.byte_base)


def price_window(
    rows: Sequence[UsageRow],
    superseded: Mapping[str, InvoiceIssued],
    *,
    key: ReportKey,
    card: RateCard,
    converter: Converter,
) -> PricedWindow:
    """Invoices of every account in ``rows`` (sorted by account) and in ``superseded``.

    ``superseded`` maps the accounts of this window to the invoice each owes now (its current
    invoice, of whichever earlier revision): where the charge changed, a credit note cancels it and
    the new invoice names it; an account with no usage now gets an empty correction. Where lines
    and totals are the same (``same_charge``), nothing is issued for the account. Zero-total
    invoices follow the card's ``zero_total``. Every row's (metric, unit) must convert (the caller
    checked ``Converter.problems``).
    """
    invoices: dict[str, InvoiceIssued] = {}
    seen: set[str] = set()
    fingerprint = card.fingerprint  # once per window: it hashes the whole card
    for account, records in groupby(rows, key=itemgetter(0)):
        seen.add(account)
        usage = converter.account_usage(
            account, ((metric, unit, Decimal(quantity)) for _, _, metric, unit, quantity in records)
        )
        old = superseded.get(account)
        new = invoice_for(
            account,
            usage,
            report_id=key.report_id,
            revision=key.revision,
            period=key.period,
            card=card,
            supersedes=None if old is None else old.invoice_id,
            fingerprint=fingerprint,
            issued_id=key.invoice_id(account),
        )
        if old is None or not same_charge(new, old):
            invoices[account] = new
    for account, old in superseded.items():
        if account in seen:
            continue
        empty = empty_correction(
            account,
            old.invoice_id,
            report_id=key.report_id,
            revision=key.revision,
            period=key.period,
            card=card,
        )
        if not same_charge(empty, old):
            invoices[account] = empty
    priced = tuple(
        PricedInvoice(
            invoice_id=invoice.invoice_id,
            account_id=account,
            total=invoice.total,
            supersedes=invoice.supersedes,
            body=invoice.model_dump_json(exclude=DRAFT_INVOICE_FIELDS),
        )
        for account, invoice in sorted(invoices.items())
        if issued(invoice, card)
    )
    credit_notes = tuple(
        PricedCreditNote(
            credit_note_id=note.credit_note_id,
            account_id=account,
            credits=note.credits,
            currency=note.currency,
            total=note.total,
            body=note.model_dump_json(exclude=DRAFT_CREDIT_NOTE_FIELDS),
        )
        for account, old in sorted(superseded.items())
        if account in invoices  # a correction is issued: the old invoice is cancelled
        for note in (credit_note_for(old, report_id=key.report_id, revision=key.revision),)
    )
    return PricedWindow(
        invoices=priced,
        credit_notes=credit_notes,
        total=exact_sum(invoice.total for invoice in priced),
        records=len(rows),
    )
