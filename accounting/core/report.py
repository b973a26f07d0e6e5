"""A report's outcome and the messages that announce it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from accounting.core.rate_card import RateCard
from contracts import (
    AbortReason,
    Period,
    ReportAborted,
    ReportCompleted,
    invoice_id,
    preview_invoice_id,
)


@dataclass(frozen=True)
class ReportKey:
    report_id: UUID
    revision: int
    period: Period
    preview: bool = False
    """A preview's: its invoices get ids no issued invoice can have."""

    def invoice_id(self, account_id: str) -> UUID:
        ids = preview_invoice_id if self.preview else invoice_id
        return ids(account_id, self.period.period_id, self.revision)


@dataclass(frozen=True)
class Completed:
    report: ReportCompleted


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


def completed(key: ReportKey, card: RateCard, *, invoices: int, total: Decimal, records: int) -> Completed:
    """``total`` is the exact sum of the invoices' totals (each already rounded to the currency)."""
    return Completed(
        ReportCompleted(
            report_id=key.report_id,
            revision=key.revision,
            period=key.period,
            currency=card.currency,
            invoice_count=invoices,
            total=card.round_money(total),
            records=records,
        )
    )
