"""From a finished gather to the report's outcome: normalize, price, and the messages that result."""

from __future__ import annotations

from decimal import Decimal

from accounting.core.normalizer import Normalized
from accounting.core.rate_card import RateCard
from accounting.core.report import Aborted, Completed, ReportKey, aborted, normalize_usage, price
from contracts import AbortCode, AbortReason, Period, UsageRecord, invoice_id, report_id

PERIOD = Period.month("2026-10")
KEY = ReportKey(report_id=report_id("2026-10", 2), revision=2, period=PERIOD)
CARD = RateCard.from_toml(
    """
    currency = "EUR"
    minor_units = 2

    [items.vcpu]
    description = "Compute, vCPU"
    unit = "vCPU-hour"
    price = { model = "per_unit", unit_price = "0.0320" }

    [items.egress]
    description = "Network egress"
    unit = "GB"
    price = { model = "package", package_size = "100", package_price = "5.00" }
    """
)


def rec(account: str, metric: str, quantity: str, unit: str) -> UsageRecord:
    return UsageRecord(
        account_id=account,
        resource_id=f"{account}-{metric}",
        resource_type="thing",
        metric=metric,
        quantity=Decimal(quantity),
        unit=unit,
    )


RECORDS = {
    "compute": (
        rec("acme", "vcpu", str(100 * 3600), "vCPU-second"),  # 100 vCPU-hours → 3.20
        rec("idle", "vcpu", "0", "vCPU-second"),  # zero usage → 0.00
    ),
    "network": (rec("acme", "egress", str(150 * 10**9), "byte"),),  # 150 GB → 2 packages → 10.00
}


def test_usage_is_priced_into_a_completed_report_with_one_invoice_per_account() -> None:
    normalized = normalize_usage(KEY, RECORDS, CARD)
    assert isinstance(normalized, Normalized)

    outcome = price(KEY, normalized, CARD)

    assert isinstance(outcome, Completed)
    report = outcome.report
    assert (report.report_id, report.revision, report.period, report.currency) == (
        KEY.report_id,
        2,
        PERIOD,
        "EUR",
    )
    assert [(ref.account_id, ref.invoice_id, ref.total) for ref in report.invoices] == [
        ("acme", invoice_id("acme", "2026-10", 2), Decimal("13.20")),
        ("idle", invoice_id("idle", "2026-10", 2), Decimal("0.00")),
    ]
    assert [(invoice.account_id, invoice.total) for invoice in outcome.invoices] == [
        ("acme", Decimal("13.20")),
        ("idle", Decimal("0.00")),
    ]


def test_the_report_total_is_the_sum_of_its_invoices() -> None:
    normalized = normalize_usage(KEY, RECORDS, CARD)
    assert isinstance(normalized, Normalized)

    outcome = price(KEY, normalized, CARD)

    assert isinstance(outcome, Completed)
    assert outcome.report.total == sum(invoice.total for invoice in outcome.invoices) == Decimal("13.20")


def test_the_report_counts_every_record_gathered() -> None:
    normalized = normalize_usage(KEY, RECORDS, CARD)
    assert isinstance(normalized, Normalized)

    outcome = price(KEY, normalized, CARD)

    assert isinstance(outcome, Completed)
    assert outcome.report.records == 3


def test_a_metric_missing_from_the_rate_card_aborts_with_unknown_unit() -> None:
    records = {**RECORDS, "gpu": (rec("acme", "gpu", "60", "GPU-second"),)}

    outcome = normalize_usage(KEY, records, CARD)

    assert isinstance(outcome, Aborted)
    assert (outcome.report.report_id, outcome.report.revision, outcome.report.period) == (
        KEY.report_id,
        2,
        PERIOD,
    )
    [reason] = outcome.report.reasons
    assert (reason.code, reason.service) == (AbortCode.UNKNOWN_UNIT, "gpu")
    assert "metric 'gpu' has no billable unit on the rate card" in reason.message


def test_aborted_keeps_every_reason_in_order() -> None:
    reasons = [
        AbortReason(code=AbortCode.UNROUTABLE, message="no queue", service="ghost"),
        AbortReason(code=AbortCode.DEADLINE, message="too slow", service="slow"),
        AbortReason(code=AbortCode.TRANSPORT_LOST, message="connection reset"),
    ]

    outcome = aborted(KEY, reasons)

    assert outcome.report.reasons == tuple(reasons)
    assert outcome.report.report_id == KEY.report_id
