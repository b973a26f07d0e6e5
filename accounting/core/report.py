"""From a finished gather to the report's outcome: normalize, price, build the messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

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


def price(key: ReportKey, normalized: Normalized, card: RateCard) -> ReportOutcome:
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
    return Completed(report=completed_message(key, batch, normalized.record_count), invoices=batch.invoices)


def completed_message(key: ReportKey, batch: InvoiceBatch, record_count: int) -> ReportCompleted:
    return ReportCompleted(
        report_id=key.report_id,
        revision=key.revision,
        period=key.period,
        currency=batch.currency,
        invoices=tuple(
            InvoiceRef(invoice_id=invoice.invoice_id, account_id=invoice.account_id, total=invoice.total)
            for invoice in batch.invoices
        ),
        total=batch.total,
        records=record_count,
    )
