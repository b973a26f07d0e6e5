"""The invoice builder: one invoice per account, deterministic ids, totals, unpriced usage."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from accounting.core.invoices import InvoiceBatch, build_invoices
from accounting.core.rate_card import RateCard
from accounting.core.usage import BillableUsage
from contracts import AbortCode, AbortReason, Period, invoice_id, report_id

PERIOD = Period.month("2026-10")
REPORT = report_id(PERIOD.period_id, 1)

CARD = RateCard.model_validate(
    {
        "currency": "EUR",
        "minor_units": 2,
        "items": {
            "vcpu": {
                "description": "Compute, vCPU",
                "unit": "vCPU-hour",
                "price": {"model": "per_unit", "unit_price": "0.0320"},
            },
            "block_storage": {
                "description": "Block storage",
                "unit": "GB-month",
                "price": {
                    "model": "graduated",
                    "tiers": [{"up_to": "1000", "unit_price": "0.100"}, {"unit_price": "0.080"}],
                },
            },
            "egress": {
                "description": "Egress",
                "unit": "GB",
                "price": {"model": "package", "package_size": "100", "package_price": "5.00"},
            },
        },
    }
)


def usage(account: str, item: str, quantity: str, unit: str | None = None) -> BillableUsage:
    unit = unit if unit is not None else CARD.items[item].unit
    return BillableUsage(account_id=account, item=item, quantity=Decimal(quantity), unit=unit)


def build(
    accounts: list[str], entries: list[BillableUsage], revision: int = 1
) -> InvoiceBatch | tuple[AbortReason, ...]:
    return build_invoices(
        report_id=report_id(PERIOD.period_id, revision),
        revision=revision,
        period=PERIOD,
        accounts=accounts,
        usage=entries,
        card=CARD,
    )


def batch(accounts: list[str], entries: list[BillableUsage], revision: int = 1) -> InvoiceBatch:
    result = build(accounts, entries, revision)
    assert isinstance(result, InvoiceBatch), result
    return result


ENTRIES = [
    usage("beta", "vcpu", "100"),  # 3.20
    usage("alpha", "egress", "150"),  # 2 packages: 10.00
    usage("alpha", "block_storage", "1500"),  # 100.00 + 40.00
    usage("alpha", "vcpu", "10.5"),  # 0.336 → 0.34
]


def test_one_invoice_per_account_including_accounts_without_usage() -> None:
    result = batch(["gamma", "alpha", "beta"], ENTRIES)
    assert [invoice.account_id for invoice in result.invoices] == ["alpha", "beta", "gamma"]
    gamma = result.invoices[2]
    assert gamma.lines == ()
    assert (str(gamma.subtotal), str(gamma.total)) == ("0.00", "0.00")
    assert result.currency == "EUR"
    assert {invoice.currency for invoice in result.invoices} == {"EUR"}


def test_accounts_only_seen_in_usage_are_invoiced() -> None:
    result = batch(["gamma"], ENTRIES)
    assert [invoice.account_id for invoice in result.invoices] == ["alpha", "beta", "gamma"]


def test_no_accounts_no_invoices() -> None:
    result = batch([], [])
    assert (result.invoices, str(result.total)) == ((), "0.00")


def test_lines_are_sorted_by_item_and_tier_and_totals_add_up() -> None:
    alpha = batch(["alpha", "beta"], ENTRIES).invoices[0]
    assert [(line.item, line.tier) for line in alpha.lines] == [
        ("block_storage", 1),
        ("block_storage", 2),
        ("egress", None),
        ("vcpu", None),
    ]
    assert [str(line.amount) for line in alpha.lines] == ["100.00", "40.00", "10.00", "0.34"]
    assert str(alpha.subtotal) == "150.34"
    assert alpha.total == alpha.subtotal


def test_batch_total_is_the_sum_of_invoice_totals() -> None:
    result = batch(["alpha", "beta", "gamma"], ENTRIES)
    assert str(result.total) == "153.54"
    assert result.total == sum(invoice.total for invoice in result.invoices)


def test_invoice_fields_and_deterministic_ids() -> None:
    first = batch(["alpha", "beta"], ENTRIES)
    again = batch(["beta", "alpha"], list(reversed(ENTRIES)))
    assert first == again
    for invoice in first.invoices:
        assert invoice.invoice_id == invoice_id(invoice.account_id, "2026-10", 1)
        assert (invoice.report_id, invoice.revision, invoice.period) == (REPORT, 1, PERIOD)
    second_revision = batch(["alpha", "beta"], ENTRIES, revision=2)
    assert {i.invoice_id for i in first.invoices}.isdisjoint({i.invoice_id for i in second_revision.invoices})
    assert all(invoice.report_id == report_id("2026-10", 2) for invoice in second_revision.invoices)
    assert len({invoice.invoice_id for invoice in first.invoices}) == 2
    assert all(isinstance(invoice.invoice_id, UUID) for invoice in first.invoices)


def test_invoices_round_trip_as_json() -> None:
    invoice = batch(["alpha"], ENTRIES).invoices[0]
    assert type(invoice).from_json(invoice.to_json()) == invoice
    assert b'"total":"150.34"' in invoice.to_json()


def test_zero_usage_is_priced_as_a_zero_line() -> None:
    [invoice] = batch(["alpha"], [usage("alpha", "vcpu", "0")]).invoices
    assert [(str(line.quantity), str(line.amount)) for line in invoice.lines] == [("0.000000", "0.00")]


def test_repeated_usage_of_one_item_is_priced_on_its_sum() -> None:
    entries = [usage("alpha", "block_storage", "600"), usage("alpha", "block_storage", "600")]
    [invoice] = batch(["alpha"], entries).invoices
    assert [(line.tier, str(line.quantity)) for line in invoice.lines] == [
        (1, "1000.000000"),
        (2, "200.000000"),
    ]


def test_every_unpriced_item_is_reported_once_and_nothing_is_priced() -> None:
    entries = [
        *ENTRIES,
        usage("alpha", "gpu", "3", unit="GPU-hour"),
        usage("beta", "gpu", "1", unit="GPU-hour"),
        usage("beta", "backup", "5", unit="GB-month"),
    ]
    result = build(["alpha", "beta"], entries)
    assert isinstance(result, tuple)
    assert [reason.code for reason in result] == [AbortCode.UNPRICED, AbortCode.UNPRICED]
    backup, gpu = result
    assert "'backup'" in backup.message and "1 account)" in backup.message
    assert "'gpu'" in gpu.message and "2 accounts" in gpu.message
    assert "not on the rate card" in gpu.message


def test_unit_mismatch_names_both_units() -> None:
    entries = [
        *ENTRIES,
        usage("alpha", "vcpu", "3600", unit="vCPU-second"),
        usage("beta", "vcpu", "7200", unit="vCPU-second"),
        usage("gamma", "egress", "1", unit="byte"),
        usage("gamma", "unknown", "1", unit="thing"),
    ]
    result = build(["alpha"], entries)
    assert isinstance(result, tuple)
    assert [reason.code for reason in result] == [AbortCode.UNPRICED] * 3
    egress, unknown, vcpu = result
    assert "'egress'" in egress.message and "'GB'" in egress.message and "'byte'" in egress.message
    assert "'unknown'" in unknown.message
    assert "'vCPU-hour'" in vcpu.message and "'vCPU-second' by 2 accounts" in vcpu.message
    assert all(reason.service is None for reason in result)
