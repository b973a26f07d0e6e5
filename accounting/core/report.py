"""From a finished gather to the report's outcome: normalize, price, build the messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from accounting.core.corrections import supersede
from accounting.core.invoices import InvoiceBatch, build_invoices
from accounting.core.normalizer import Normalized, normalize
from accounting.core.rate_card import RateCard
from contracts import (
    AbortReason,
    InvoiceIssued,
    InvoiceRef,
    Period,
    ReportAborted,
    ReportCompleted,
    UsageRecord,
    UsageReply,
)


@dataclass(frozen=True)
class ReportKey:
    report_id: UUID
    revision: int
    period: Period


@dataclass(frozen=True)
class Completed:
    report: ReportCompleted
    invoices: tuple[InvoiceIssued, ...]


@dataclass(frozen=True)
class Aborted:
    report: ReportAborted


ReportOutcome = Completed | Aborted


def aborted(key: ReportKey, reasons: Sequence[AbortReason]) -> Aborted:
    return Aborted(
        ReportAborted(
            report_id=key.report_id, revision=key.revision, period=key.period, reasons=tuple(reasons)
        )
    )


def normalize_usage(
    key: ReportKey, records: dict[str, tuple[UsageRecord, ...]], card: RateCard
) -> Normalized | Aborted:
    billable_units = {item_key: item.unit for item_key, item in card.items.items()}
    result = normalize(records, key.period, billable_units, card.byte_base)
    return result if isinstance(result, Normalized) else aborted(key, result)


def price(
    key: ReportKey, normalized: Normalized, card: RateCard, previous: Sequence[InvoiceIssued] = ()
) -> ReportOutcome:
    """Price every account; with ``previous`` (a completed revision's invoices) issue corrections."""
    batch = build_invoices(
        report_id=key.report_id,
        revision=key.revision,
        period=key.period,
        accounts=normalized.accounts,
        usage=normalized.usage,
        card=card,
    )
    if not isinstance(batch, InvoiceBatch):
        return aborted(key, batch)
    invoices = supersede(
        batch.invoices, previous, report_id=key.report_id, revision=key.revision, period=key.period, card=card
    )
    return Completed(
        report=completed_message(key, invoices, card, normalized.record_count), invoices=invoices
    )


def completed_message(
    key: ReportKey, invoices: Sequence[InvoiceIssued], card: RateCard, record_count: int
) -> ReportCompleted:
    return ReportCompleted(
        report_id=key.report_id,
        revision=key.revision,
        period=key.period,
        currency=card.currency,
        invoices=tuple(
            InvoiceRef(invoice_id=invoice.invoice_id, account_id=invoice.account_id, total=invoice.total)
            for invoice in invoices
        ),
        total=sum((invoice.total for invoice in invoices), start=card.round_money(Decimal(0))),
        records=record_count,
    )


def records_from_raw(raw: Sequence[str | bytes]) -> tuple[UsageRecord, ...]:
    """The records of a stored service answer (its raw reply chunks), in chunk order."""
    replies = sorted((UsageReply.from_json(body) for body in raw), key=lambda reply: reply.chunk.seq)
    return tuple(record for reply in replies for record in reply.records)
