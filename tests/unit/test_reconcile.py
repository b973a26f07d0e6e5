"""Reconciliation traces (pure): records → factor → billable quantity → tiers → amounts → invoice,
computed by the same functions that priced the invoices, checked against them, adding up exactly."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from accounting.core.billing import converter_for, price_window
from accounting.core.exact import fraction_text
from accounting.core.rate_card import RateCard
from accounting.core.reconcile import AccountTrace, UsageRow, trace_account
from accounting.core.reconcile_export import (
    CSV_COLUMNS,
    account_json,
    csv_rows,
    factor_decimal,
    quantity_decimal,
    total_csv_rows,
    totals_json,
)
from accounting.core.reconcile_totals import TotalsBuilder
from accounting.core.report import ReportKey
from contracts import InvoiceIssued, Period, report_id

OCTOBER = Period.month("2026-10")  # 31 days: 2,678,400 seconds
KEY = ReportKey(report_id=report_id("2026-10", 1), revision=1, period=OCTOBER)

CARD: dict[str, Any] = {
    "currency": "EUR",
    "minor_units": 2,
    "items": {
        "vcpu": {
            "description": "Compute, vCPU",
            "unit": "vCPU-hour",
            "price": {"model": "per_unit", "unit_price": "0.0320"},
        },
        "memory": {
            "description": "Compute, memory",
            "unit": "GB-hour",
            "price": {"model": "per_unit", "unit_price": "0.0040"},
        },
        "block_storage": {
            "description": "Block storage",
            "unit": "GB-month",
            "price": {
                "model": "graduated",
                "tiers": [
                    {"up_to": "1000", "unit_price": "0.100"},
                    {"up_to": "10000", "unit_price": "0.080"},
                    {"unit_price": "0.060"},
                ],
            },
        },
        "object_storage": {
            "description": "Object storage",
            "unit": "GB-month",
            "price": {
                "model": "volume",
                "tiers": [
                    {"up_to": "500", "unit_price": "0.0230"},
                    {"up_to": "5000", "unit_price": "0.0210"},
                    {"unit_price": "0.0190"},
                ],
            },
        },
        "egress": {
            "description": "Network egress",
            "unit": "GB",
            "price": {"model": "package", "package_size": "100", "package_price": "5.00"},
        },
    },
}


def card(**changes: Any) -> RateCard:
    return RateCard.model_validate({**CARD, **changes})


def priced(rows: Sequence[UsageRow], rate_card: RateCard) -> tuple[dict[str, InvoiceIssued], Decimal]:
    """What the pricer stores for these records: each account's invoice, and the report's total."""
    window = price_window(sorted(rows), {}, key=KEY, card=rate_card, converter=converter_for(KEY, rate_card))
    invoices = {
        invoice.account_id: InvoiceIssued.model_validate_json(invoice.body) for invoice in window.invoices
    }
    return invoices, rate_card.round_money(window.total)


def traced(
    rows: Sequence[UsageRow], rate_card: RateCard, stored_with: RateCard | None = None
) -> tuple[list[AccountTrace], dict[str, InvoiceIssued], Decimal]:
    """Every account's trace with the card that priced ``rows`` (``stored_with``, default the same)."""
    invoices, total = priced(rows, stored_with or rate_card)
    converter = converter_for(KEY, rate_card)
    accounts = sorted({row[0] for row in rows} | invoices.keys())
    traces = [
        trace_account(
            account,
            [row for row in rows if row[0] == account],
            converter=converter,
            card=rate_card,
            stored=invoices.get(account),
        )
        for account in accounts
    ]
    return traces, invoices, total


def one(rows: Sequence[UsageRow], rate_card: RateCard | None = None) -> AccountTrace:
    [trace], _, _ = traced(rows, rate_card or card())
    assert trace.problems == (), [problem.message for problem in trace.problems]
    return trace


def lines(
    trace: AccountTrace, item: str
) -> list[tuple[int | None, str | None, Decimal, Decimal, str, str | None]]:
    """Each line of ``item``: tier, tier range, quantity, unit price, amount, stored amount."""
    [found] = [entry for entry in trace.items if entry.item == item]
    return [
        (
            line.tier,
            line.tier_range,
            line.quantity,
            line.unit_price,
            str(line.amount),
            None if line.stored_amount is None else str(line.stored_amount),
        )
        for line in found.lines
    ]


# --- one account, each price model ---------------------------------------------------------------


def test_per_unit_vcpu_seconds_are_traced_to_the_stored_line() -> None:
    trace = one(
        [
            ("acme", "compute", "vcpu", "vCPU-second", "36000"),
            ("acme", "compute", "vcpu", "vCPU-second", "1800"),
        ]
    )
    [item] = trace.items
    [source] = item.sources
    assert (source.service, source.metric, source.unit, source.records) == (
        "compute",
        "vcpu",
        "vCPU-second",
        2,
    )
    assert source.raw_quantity == Decimal("37800")
    assert source.factor == Fraction(1, 3600)
    assert source.converted == Fraction(21, 2)
    assert item.billable_quantity == Decimal("10.500000")
    assert item.billable_unit == "vCPU-hour"
    assert item.price_model == "per_unit"
    # 10.5 * 0.0320 = 0.336 → 0.34; the stored invoice line says the same.
    assert lines(trace, "vcpu") == [(None, None, Decimal("10.5"), Decimal("0.032"), "0.34", "0.34")]
    assert trace.total == trace.stored_total == Decimal("0.34")
    assert trace.issued


def test_graduated_usage_is_traced_across_its_tiers() -> None:
    trace = one([("acme", "storage", "block_storage", "GB-month", "12000.5")])
    assert lines(trace, "block_storage") == [
        (1, "up to 1000", Decimal(1000), Decimal("0.1"), "100.00", "100.00"),
        (2, "over 1000 up to 10000", Decimal(9000), Decimal("0.08"), "720.00", "720.00"),
        (3, "over 10000", Decimal("2000.5"), Decimal("0.06"), "120.03", "120.03"),
    ]
    [item] = trace.items
    assert item.amount == Decimal("940.03") == trace.total == trace.stored_total


def test_volume_prices_every_unit_at_the_tier_of_the_total() -> None:
    trace = one([("acme", "storage", "object_storage", "GB-month", "600")])
    assert lines(trace, "object_storage") == [
        (2, "over 500 up to 5000", Decimal(600), Decimal("0.021"), "12.60", "12.60")
    ]


def test_package_counts_started_packages_of_converted_bytes() -> None:
    trace = one([("acme", "network", "egress", "byte", "250000000001")])
    [item] = trace.items
    [source] = item.sources
    assert source.factor == Fraction(1, 10**9)
    assert factor_decimal(source.factor) == "0.000000001"
    assert item.billable_quantity == Decimal("250.000000")  # 250.000000001 rounded once
    [line] = item.lines
    assert (line.tier, line.quantity, line.unit) == (None, Decimal(3), "package of 100 GB")
    assert str(line.amount) == "15.00"
    assert line.stored_amount == line.amount


@pytest.mark.parametrize(
    ("byte_base", "gigabyte", "billable"),
    [
        ("decimal", 10**9, "1.000000"),
        # 10^9 bytes held all month are 10^9 / 2^30 = 0.931322574615… GiB-months.
        ("binary", 2**30, "0.931323"),
    ],
)
def test_byte_seconds_become_gb_months_with_the_cards_byte_base(
    byte_base: str, gigabyte: int, billable: str
) -> None:
    month = 31 * 86_400
    rows: list[UsageRow] = [("acme", "storage", "block_storage", "byte-second", str(10**9 * month))]
    trace = one(rows, card(byte_base=byte_base))
    [item] = trace.items
    [source] = item.sources
    assert source.factor == Fraction(1, gigabyte * month)
    assert fraction_text(source.factor) == f"1/{gigabyte * month}"
    assert source.converted == Fraction(10**9, gigabyte)
    assert item.exact_quantity == Fraction(10**9, gigabyte)
    assert str(item.billable_quantity) == billable
    [line] = item.lines
    expected = (Decimal(billable) * Decimal("0.100")).quantize(Decimal("0.01"))
    assert line.amount == line.stored_amount == expected


def test_an_item_reported_by_two_services_in_two_units_is_summed_exactly_then_rounded_once() -> None:
    trace = one(
        [
            ("acme", "compute", "memory", "MiB-second", "1"),
            ("acme", "compute", "memory", "MiB-second", "2"),
            ("acme", "legacy", "memory", "GB-hour", "0.0000004"),
        ]
    )
    [item] = trace.items
    assert [(s.service, s.unit, s.records, format(s.raw_quantity, "f")) for s in item.sources] == [
        ("compute", "MiB-second", 2, "3"),
        ("legacy", "GB-hour", 1, "0.0000004"),
    ]
    # 3 MiB-s = 3 * 2^20 / (10^9 * 3600) GB-hours = 0.000000873813…, + 0.0000004 = 0.00000127… → 0.000001
    exact = Fraction(3 * 2**20, 10**9 * 3600) + Fraction(4, 10**7)
    assert item.exact_quantity == exact
    assert item.billable_quantity == Decimal("0.000001")
    assert quantity_decimal(item.sources[0].converted) == "0.000000873813"
    assert quantity_decimal(item.sources[1].converted) == "0.0000004"


def test_factors_are_exact_fractions_and_decimals_exact_when_finite_else_24_significant_digits() -> None:
    assert (fraction_text(Fraction(1)), factor_decimal(Fraction(1))) == ("1", "1")
    assert fraction_text(Fraction(1, 3600)) == "1/3600"
    assert factor_decimal(Fraction(1, 3600)) == "0.000277777777777777777777778"
    assert factor_decimal(Fraction(1, 10**9 * 2678400)) == "0.000000000000000373357228195937873357228"
    assert factor_decimal(Fraction(5, 3)) == "1.66666666666666666666667"
    assert factor_decimal(Fraction(1, 2**30)) == "0.000000000931322574615478515625"  # exact
    assert quantity_decimal(Fraction(21, 2)) == "10.5"
    assert quantity_decimal(Fraction(1, 3)) == "0.333333333333"


# --- checks against the stored invoices ------------------------------------------------------------


def test_a_card_that_no_longer_matches_the_stored_invoices_is_reported_line_by_line() -> None:
    rows: list[UsageRow] = [
        ("acme", "compute", "vcpu", "vCPU-second", "36000"),
        ("acme", "storage", "block_storage", "GB-month", "1500"),
    ]
    cheaper = card(
        items={
            **CARD["items"],
            "vcpu": {**CARD["items"]["vcpu"], "price": {"model": "per_unit", "unit_price": "0.0300"}},
        }
    )
    [trace], _, _ = traced(rows, cheaper, stored_with=card())
    found = {(problem.item, problem.what, problem.traced, problem.stored) for problem in trace.problems}
    assert found == {
        ("vcpu", "unit price differs", "0.0300", "0.0320"),
        ("vcpu", "amount differs", "0.30", "0.32"),
        (None, "invoice total differs", "140.30", "140.32"),
    }
    messages = [problem.message for problem in trace.problems]
    assert "acme vcpu: amount differs (traced 0.30, stored 0.32)" in messages


def test_a_stored_line_with_no_records_behind_it_is_reported() -> None:
    rows: list[UsageRow] = [("acme", "compute", "vcpu", "vCPU-second", "36000")]
    invoices, _ = priced([*rows, ("acme", "network", "egress", "GB", "1")], card())
    trace = trace_account(
        "acme", rows, converter=converter_for(KEY, card()), card=card(), stored=invoices["acme"]
    )
    assert {(p.item, p.what) for p in trace.problems} == {
        ("egress", "stored line not traced to any record"),
        (None, "invoice total differs"),
    }


def test_an_account_without_an_invoice_is_a_problem_only_if_it_owes_something() -> None:
    converter, rate_card = converter_for(KEY, card()), card()
    owes = trace_account(
        "acme",
        [("acme", "compute", "vcpu", "vCPU-second", "3600")],
        converter=converter,
        card=rate_card,
        stored=None,
    )
    assert [(p.what, p.traced) for p in owes.problems] == [("no invoice stored", "0.03")]
    nothing = trace_account(
        "acme",
        [("acme", "compute", "vcpu", "vCPU-second", "0")],
        converter=converter,
        card=rate_card,
        stored=None,
    )
    assert nothing.problems == () and not nothing.issued and nothing.total == 0


def test_a_metric_the_card_cannot_convert_is_a_problem_not_a_crash() -> None:
    trace = trace_account(
        "acme",
        [("acme", "compute", "gpu", "GPU-second", "10"), ("acme", "compute", "vcpu", "vCPU-second", "3600")],
        converter=converter_for(KEY, card()),
        card=card(),
        stored=None,
    )
    assert [(p.item, p.traced) for p in trace.problems] == [("gpu", "10"), (None, "0.03")]
    assert [item.item for item in trace.items] == ["vcpu"]


# --- totals -----------------------------------------------------------------------------------------


def random_rows(seed: int, accounts: int) -> list[UsageRow]:
    chance = random.Random(seed)
    rows: list[UsageRow] = []
    for number in range(accounts):
        account = f"acct-{number:04d}"
        for service, metric, unit, scale in (
            ("compute", "vcpu", "vCPU-second", 10**7),
            ("compute", "memory", "MiB-second", 10**10),
            ("storage", "block_storage", "byte-second", 10**19),
            ("storage", "object_storage", "byte-second", 10**18),
            ("network", "egress", "byte", 10**12),
        ):
            for resource in range(chance.randint(0, 3)):
                digits = chance.randint(0, 6)
                quantity = Decimal(chance.randint(0, scale)).scaleb(-digits) if resource != 1 else Decimal(0)
                rows.append((account, service, metric, unit, format(quantity, "f")))
    return rows


@pytest.mark.parametrize("byte_base", ["decimal", "binary"])
def test_the_totals_add_up_exactly_to_the_sum_of_the_invoice_totals(byte_base: str) -> None:
    rate_card = card(byte_base=byte_base)
    rows = random_rows(7, 60)
    traces, invoices, report_total = traced(rows, rate_card)
    builder = TotalsBuilder(rate_card.currency)
    for trace in traces:
        builder.add(trace)
    totals = builder.finish(report_total)

    assert totals.ok, [problem.message for problem in totals.problems]
    stored = sum((invoice.total for invoice in invoices.values()), Decimal(0))
    assert totals.total == totals.stored_total == stored == report_total
    assert sum((item.amount for item in totals.items), Decimal(0)) == totals.total
    assert totals.accounts == len(traces) and totals.invoices == len(invoices)
    assert totals.records == len(rows)
    for item in totals.items:
        assert item.billable_quantity == sum(
            (entry.billable_quantity for trace in traces for entry in trace.items if entry.item == item.item),
            Decimal(0),
        )
        assert sum(raw for _, _, raw in item.raw) == sum(
            Decimal(row[4]) for row in rows if row[2] == item.item
        )


def test_totals_that_do_not_match_the_reports_total_are_a_problem() -> None:
    rows = random_rows(3, 5)
    traces, _, report_total = traced(rows, card())
    builder = TotalsBuilder("EUR")
    for trace in traces:
        builder.add(trace)
    totals = builder.finish(report_total + Decimal("0.01"))
    assert not totals.ok and totals.problem_count == 1
    assert [problem.what for problem in totals.problems] == [
        "the invoices this revision issued do not add up to its report's total"
    ]


def test_problems_beyond_the_limit_are_counted_not_kept() -> None:
    converter, rate_card = converter_for(KEY, card()), card()
    builder = TotalsBuilder("EUR", max_problems=3)
    for number in range(10):
        account = f"a{number}"
        builder.add(
            trace_account(
                account,
                [(account, "compute", "vcpu", "vCPU-second", "3600")],
                converter=converter,
                card=rate_card,
                stored=None,
            )
        )
    totals = builder.finish(None)
    assert totals.problem_count == 10 and len(totals.problems) == 3


# --- rows for CSV and JSON -------------------------------------------------------------------------


def test_csv_line_rows_add_up_to_the_total_and_json_round_trips() -> None:
    rows = random_rows(11, 8)
    traces, _, report_total = traced(rows, card())
    builder = TotalsBuilder("EUR")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for trace in traces:
        builder.add(trace)
        writer.writerows(csv_rows(trace))
        json.dumps(account_json(trace))
    totals = builder.finish(report_total)
    writer.writerows(total_csv_rows(totals))

    parsed = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert sum(Decimal(row["amount"]) for row in parsed if row["kind"] == "line") == report_total
    assert sum(Decimal(row["amount"]) for row in parsed if row["kind"] == "invoice") == report_total
    assert sum(Decimal(row["amount"]) for row in parsed if row["kind"] == "item") == report_total
    [total] = [row for row in parsed if row["kind"] == "total"]
    assert Decimal(total["amount"]) == Decimal(total["report_total"]) == report_total
    assert total["status"] == "ok"
    assert {row["status"] for row in parsed if row["kind"] in ("source", "line", "invoice")} == {"ok"}
    assert json.loads(json.dumps(totals_json(totals)))["total"] == str(report_total)
