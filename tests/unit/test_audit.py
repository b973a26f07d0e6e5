"""The audit of an account's documents (``reports reconcile``): rows against bodies, invoices
against their report, credit notes against what they cancel, and invoiced minus credited against
what the account owes now. Each tampering a finance team found goes unnoticed no more."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from accounting.core.audit import CreditNoteRow, InvoiceRow, Revision, audit_account
from accounting.core.corrections import credit_note_for
from accounting.core.invoices import invoice_for
from accounting.core.rate_card import RateCard
from accounting.core.reconcile import Problem
from accounting.core.usage import BillableUsage
from contracts import CreditNoteIssued, InvoiceIssued, Period, report_id

PERIOD = Period.month("2026-10")
CARD = RateCard.from_toml(
    """
currency = "EUR"
[items.storage]
description = "Storage"
unit = "GB"
price = { model = "per_unit", unit_price = "0.5" }
"""
)
REPORTS = {revision: report_id(PERIOD.period_id, revision) for revision in (1, 2)}
REVISIONS = {revision: Revision(REPORTS[revision], PERIOD, CARD.fingerprint) for revision in (1, 2)}


def invoice(revision: int, gigabytes: str, supersedes: InvoiceIssued | None = None) -> InvoiceIssued:
    usage = [BillableUsage(account_id="acme", item="storage", quantity=Decimal(gigabytes), unit="GB")]
    return invoice_for(
        "acme",
        usage,
        report_id=REPORTS[revision],
        revision=revision,
        period=PERIOD,
        card=CARD,
        supersedes=None if supersedes is None else supersedes.invoice_id,
    )


def invoice_row(document: InvoiceIssued, **changed: Any) -> InvoiceRow:
    supersedes = None if document.supersedes is None else str(document.supersedes)
    row = InvoiceRow(
        str(document.invoice_id),
        str(document.report_id),
        document.revision,
        document.account_id,
        document.currency,
        str(document.total),
        supersedes,
        document.model_dump_json(),
    )
    return replace(row, **changed)


def note_row(document: CreditNoteIssued, **changed: Any) -> CreditNoteRow:
    row = CreditNoteRow(
        str(document.credit_note_id),
        str(document.report_id),
        document.revision,
        document.account_id,
        str(document.credits),
        document.currency,
        str(document.total),
        document.model_dump_json(),
    )
    return replace(row, **changed)


FIRST = invoice(1, "1291.14")  # 645.57 EUR
CORRECTED = invoice(2, "1000", supersedes=FIRST)  # 500.00 EUR
NOTE = credit_note_for(FIRST, report_id=REPORTS[2], revision=2)


def whats(problems: list[Problem]) -> list[str]:
    return [problem.what for problem in problems]


def test_a_corrected_account_owes_its_corrected_invoice_and_nothing_is_wrong() -> None:
    balances, problems = audit_account(
        "acme", [invoice_row(FIRST), invoice_row(CORRECTED)], [note_row(NOTE)], REVISIONS
    )

    assert problems == []
    [balance] = balances
    assert (balance.invoiced, balance.credited, balance.owed) == (
        Decimal("1145.57"),
        Decimal("645.57"),
        Decimal("500.00"),
    )


def test_a_credit_note_total_changed_in_its_row_is_found() -> None:
    _, problems = audit_account(
        "acme", [invoice_row(FIRST), invoice_row(CORRECTED)], [note_row(NOTE, total="0.01")], REVISIONS
    )

    assert whats(problems) == [f"credit note {NOTE.credit_note_id}: total of the row differs from the body"]


def test_a_credit_note_total_changed_in_row_and_body_is_found() -> None:
    cheap = NOTE.model_copy(update={"total": Decimal("0.01")})
    _, problems = audit_account(
        "acme", [invoice_row(FIRST), invoice_row(CORRECTED)], [note_row(cheap)], REVISIONS
    )

    assert whats(problems) == [
        f"credit note {NOTE.credit_note_id} does not cancel invoice {FIRST.invoice_id} exactly",
        "invoiced minus credited in EUR is not the current invoice's total",
    ]
    assert (problems[1].traced, problems[1].stored) == ("500.00", "1145.56")


def test_a_deleted_credit_note_is_found() -> None:
    _, problems = audit_account("acme", [invoice_row(FIRST), invoice_row(CORRECTED)], [], REVISIONS)

    assert whats(problems) == [
        f"invoice {FIRST.invoice_id} (superseded) has 0 credit note(s), not 1",
        "invoiced minus credited in EUR is not the current invoice's total",
    ]


def test_an_invoice_whose_period_was_altered_is_found() -> None:
    longer = PERIOD.model_copy(update={"end": PERIOD.end + timedelta(days=1)})
    altered = FIRST.model_copy(update={"period": longer})
    _, problems = audit_account("acme", [invoice_row(altered)], [], REVISIONS)

    assert whats(problems) == [f"invoice {FIRST.invoice_id}: period differs from its report's"]


def test_a_stored_card_that_no_longer_matches_the_invoices_is_found() -> None:
    other_card = {1: replace(REVISIONS[1], rate_card="sha256:" + "0" * 64)}
    _, problems = audit_account("acme", [invoice_row(FIRST)], [], other_card)

    assert whats(problems) == [f"invoice {FIRST.invoice_id}: rate card differs from its report's"]
    assert problems[0].stored == CARD.fingerprint


@pytest.mark.parametrize(
    ("changed", "what"),
    [
        ({"total": "6455.70"}, "total"),
        ({"account_id": "someone-else"}, "account_id"),
        ({"body": "{}"}, None),
    ],
)
def test_an_invoice_row_that_is_not_its_body_is_found(changed: dict[str, str], what: str | None) -> None:
    _, problems = audit_account("acme", [invoice_row(FIRST, **changed)], [], REVISIONS)

    expected = (
        f"invoice {FIRST.invoice_id}: {what} of the row differs from the body"
        if what
        else f"invoice {FIRST.invoice_id}: its stored body is not an InvoiceIssued"
    )
    assert expected in whats(problems)
