"""From gathered records to the report's outcome: the streamed, windowed path prices exactly as the
in-memory reference (normalize → build_invoices → supersede), and the messages that result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.core.billing import UsageRow, converter_for, price_window
from accounting.core.corrections import supersede
from accounting.core.invoices import InvoiceBatch, build_invoices
from accounting.core.normalizer import Normalized, normalize
from accounting.core.rate_card import RateCard
from accounting.core.report import ReportKey, aborted, completed
from contracts import (
    AbortCode,
    AbortReason,
    CreditNoteIssued,
    InvoiceIssued,
    Period,
    UsageRecord,
    credit_note_id,
    invoice_id,
    report_id,
)

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

    [items.storage]
    description = "Storage"
    unit = "GB-month"
    price = { model = "graduated", tiers = [{ up_to = "10", unit_price = "0.10" }, { unit_price = "0.08" }] }

    [items.egress]
    description = "Network egress"
    unit = "GB"
    price = { model = "package", package_size = "100", package_price = "5.00" }
    """
)
UNITS = {"vcpu": ("vCPU-second", "vCPU-hour"), "storage": ("byte-second",), "egress": ("byte", "GB")}


def rec(account: str, metric: str, quantity: str, unit: str, resource: str = "") -> UsageRecord:
    return UsageRecord(
        account_id=account,
        resource_id=resource or f"{account}-{metric}",
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


def reference(
    records: Mapping[str, Sequence[UsageRecord]], previous: Sequence[InvoiceIssued] = ()
) -> tuple[InvoiceIssued, ...]:
    """The in-memory pipeline the streamed one must equal."""
    normalized = normalize(records, PERIOD, CARD.billable_units, CARD.byte_base)
    assert isinstance(normalized, Normalized)
    batch = build_invoices(
        report_id=KEY.report_id,
        revision=KEY.revision,
        period=PERIOD,
        accounts=normalized.accounts,
        usage=normalized.usage,
        card=CARD,
    )
    assert isinstance(batch, InvoiceBatch)
    return supersede(
        batch.invoices, previous, report_id=KEY.report_id, revision=KEY.revision, period=PERIOD, card=CARD
    )


def rows(records: Mapping[str, Sequence[UsageRecord]]) -> list[UsageRow]:
    """Records as the store gives them back: sorted by account."""
    return sorted(
        (r.account_id, service, r.metric, r.unit, str(r.quantity))
        for service, listed in records.items()
        for r in listed
    )


def streamed(
    records: Mapping[str, Sequence[UsageRecord]],
    superseded: Mapping[str, InvoiceIssued] | None = None,
    window_accounts: int = 2,
) -> list[InvoiceIssued]:
    """Price window by window, each window a few whole accounts, as the pricer does."""
    converter = converter_for(KEY, CARD)
    everything = rows(records)
    accounts = sorted({row[0] for row in everything} | set(superseded or {}))
    invoices: list[InvoiceIssued] = []
    for start in range(0, len(accounts), window_accounts):
        chosen = set(accounts[start : start + window_accounts])
        window = price_window(
            [row for row in everything if row[0] in chosen],
            {account: old for account, old in (superseded or {}).items() if account in chosen},
            key=KEY,
            card=CARD,
            converter=converter,
        )
        invoices.extend(InvoiceIssued.model_validate_json(priced.body) for priced in window.invoices)
    return invoices


def test_the_streamed_path_prices_exactly_as_the_in_memory_reference() -> None:
    invoices = streamed(RECORDS)

    assert [invoice.model_dump_json() for invoice in invoices] == [
        invoice.model_dump_json() for invoice in reference(RECORDS)
    ]
    assert [(invoice.account_id, invoice.total) for invoice in invoices] == [
        ("acme", Decimal("13.20")),
        ("idle", Decimal("0.00")),
    ]


@st.composite
def usage(draw: st.DrawFn) -> dict[str, tuple[UsageRecord, ...]]:
    records: dict[str, list[UsageRecord]] = {"a": [], "b": []}
    count = draw(st.integers(min_value=0, max_value=30))
    for number in range(count):
        metric = draw(st.sampled_from(sorted(UNITS)))
        unit = draw(st.sampled_from(UNITS[metric]))
        quantity = draw(st.decimals(min_value=0, max_value=10**15, places=draw(st.integers(0, 9))))
        account = f"acct-{draw(st.integers(0, 6))}"
        service = draw(st.sampled_from(["a", "b"]))
        records[service].append(rec(account, metric, str(quantity), unit, resource=f"r{number}"))
    return {service: tuple(listed) for service, listed in records.items()}


@settings(max_examples=150, deadline=None)
@given(usage(), st.integers(min_value=1, max_value=4))
def test_any_usage_in_any_windows_prices_exactly_as_the_reference(
    records: dict[str, tuple[UsageRecord, ...]], window_accounts: int
) -> None:
    assert [invoice.model_dump_json() for invoice in streamed(records, window_accounts=window_accounts)] == [
        invoice.model_dump_json() for invoice in reference(records)
    ]


def test_corrections_name_what_they_supersede_and_empty_an_account_without_usage_now() -> None:
    previous = reference({"compute": (*RECORDS["compute"], rec("gone", "vcpu", "7200", "vCPU-second"))})
    superseded = {invoice.account_id: invoice for invoice in previous}

    invoices = streamed(RECORDS, superseded)

    assert [invoice.model_dump_json() for invoice in invoices] == [
        invoice.model_dump_json() for invoice in reference(RECORDS, previous)
    ]
    gone = next(invoice for invoice in invoices if invoice.account_id == "gone")
    assert (gone.lines, gone.total, gone.supersedes) == ((), Decimal("0.00"), superseded["gone"].invoice_id)
    assert gone.invoice_id == invoice_id("gone", "2026-10", 2)


def test_a_correction_credits_each_superseded_invoice_in_full_before_correcting_it() -> None:
    previous = reference({"compute": (*RECORDS["compute"], rec("gone", "vcpu", "7200", "vCPU-second"))})
    superseded = {invoice.account_id: invoice for invoice in previous}

    window = price_window(rows(RECORDS), superseded, key=KEY, card=CARD, converter=converter_for(KEY, CARD))

    notes = [CreditNoteIssued.model_validate_json(note.body) for note in window.credit_notes]
    # idle's charge is the same (one vCPU line of 0): nothing to correct, nothing to explain.
    changed = {account: old for account, old in superseded.items() if account != "idle"}
    assert [note.account_id for note in notes] == sorted(changed) == ["acme", "gone"]
    for note in notes:
        old = superseded[note.account_id]
        assert (note.credits, note.lines, note.total, note.currency) == (
            old.invoice_id,
            old.lines,
            old.total,
            old.currency,
        )
        assert (note.report_id, note.revision) == (KEY.report_id, KEY.revision)
        assert note.credit_note_id == credit_note_id(note.account_id, "2026-10", KEY.revision)
    corrected = {priced.account_id: priced.supersedes for priced in window.invoices}
    assert corrected == {account: old.invoice_id for account, old in changed.items()}


def test_a_correction_issues_nothing_where_the_charge_is_the_same() -> None:
    """A forced replay after one sample changed used to credit and re-invoice every account; an
    account gone from the data got another 0.00 credit note and invoice on every later replay."""
    previous = reference({"compute": (*RECORDS["compute"], rec("gone", "vcpu", "7200", "vCPU-second"))})
    first = price_window(
        rows(RECORDS),
        {invoice.account_id: invoice for invoice in previous},
        key=KEY,
        card=CARD,
        converter=converter_for(KEY, CARD),
    )
    current = {
        **{invoice.account_id: invoice for invoice in previous},
        **{priced.account_id: InvoiceIssued.model_validate_json(priced.body) for priced in first.invoices},
    }
    later = ReportKey(report_id=report_id("2026-10", 3), revision=3, period=PERIOD)

    again = price_window(rows(RECORDS), current, key=later, card=CARD, converter=converter_for(later, CARD))

    assert (again.invoices, again.credit_notes, again.total) == ((), (), Decimal(0))
    assert current["gone"].lines == () and current["gone"].revision == KEY.revision


def test_zero_total_invoices_are_skipped_when_the_card_says_so_unless_they_correct_one() -> None:
    skipping = CARD.model_copy(update={"zero_total": "skip"})
    converter = converter_for(KEY, skipping)

    first = price_window(rows(RECORDS), {}, key=KEY, card=skipping, converter=converter)
    idle = reference({"compute": (rec("idle", "vcpu", "3600", "vCPU-second"),)})
    corrected = price_window(rows(RECORDS), {"idle": idle[0]}, key=KEY, card=skipping, converter=converter)

    assert [priced.account_id for priced in first.invoices] == ["acme"]
    assert [(priced.account_id, priced.total) for priced in corrected.invoices] == [
        ("acme", Decimal("13.20")),
        ("idle", Decimal("0.00")),
    ]


def test_every_invoice_names_the_fingerprint_of_the_card_that_priced_it() -> None:
    invoices = streamed(RECORDS)

    assert {invoice.rate_card for invoice in invoices} == {CARD.fingerprint}


def test_a_window_totals_its_invoices_and_counts_its_records() -> None:
    window = price_window(rows(RECORDS), {}, key=KEY, card=CARD, converter=converter_for(KEY, CARD))

    assert (window.total, window.records, len(window.invoices)) == (Decimal("13.20"), 3, 2)


def test_completed_names_the_count_total_and_records_not_every_invoice() -> None:
    outcome = completed(KEY, CARD, invoices=2, total=Decimal("13.2"), records=3)

    report = outcome.report
    assert (report.report_id, report.revision, report.currency, report.invoice_count) == (
        KEY.report_id,
        2,
        "EUR",
        2,
    )
    assert (str(report.total), report.records) == ("13.20", 3)


def test_a_metric_missing_from_the_rate_card_is_an_unknown_unit_naming_the_service() -> None:
    converter = converter_for(KEY, CARD)

    [reason] = converter.problems([("compute", "vcpu", "vCPU-second", 2), ("gpu", "gpu", "GPU-second", 1)])

    assert (reason.code, reason.service) == (AbortCode.UNKNOWN_UNIT, "gpu")
    assert (
        "metric 'gpu' has no billable unit on the rate card (1 record(s) in 'GPU-second')" in reason.message
    )


def test_aborted_keeps_every_reason_in_order() -> None:
    reasons = [
        AbortReason(code=AbortCode.UNROUTABLE, message="no queue", service="ghost"),
        AbortReason(code=AbortCode.DEADLINE, message="too slow", service="slow"),
        AbortReason(code=AbortCode.TRANSPORT_LOST, message="connection reset"),
    ]

    outcome = aborted(KEY, reasons)

    assert outcome.report.reasons == tuple(reasons)
    assert outcome.report.report_id == KEY.report_id
