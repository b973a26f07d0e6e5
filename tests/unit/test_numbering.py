"""Numbers and dates of issued documents (pure): series per kind and year, zero-padding, the
prefixes a configuration may name, and a draft body stamped exactly as the model would write it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from accounting.core.corrections import credit_note_for
from accounting.core.numbering import (
    DRAFT_CREDIT_NOTE_FIELDS,
    DRAFT_INVOICE_FIELDS,
    Numbering,
    prefix_problem,
)
from contracts import CreditNoteIssued, InvoiceIssued
from tests.unit.test_documents import invoice

ISSUED = datetime(2026, 12, 7, 17, 30, tzinfo=UTC)


def test_numbers_are_the_series_prefix_and_a_zero_padded_sequence() -> None:
    numbering = Numbering(digits=6)

    assert numbering.series("invoice", ISSUED) == "INV-2026-"
    assert numbering.series("credit_note", ISSUED) == "CN-2026-"
    assert numbering.number("INV-2026-", 123) == "INV-2026-000123"
    assert numbering.number("INV-2026-", 1_234_567) == "INV-2026-1234567"
    with pytest.raises(ValueError, match="start at 1"):
        numbering.number("INV-2026-", 0)


def test_the_year_of_a_series_is_the_year_of_issue_in_the_calendar_time_zone() -> None:
    new_year_in_paris = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 January in Paris

    assert Numbering().series("invoice", new_year_in_paris) == "INV-2026-"
    assert Numbering(zone=ZoneInfo("Europe/Paris")).series("invoice", new_year_in_paris) == "INV-2027-"


def test_a_preview_number_can_never_be_an_issued_one() -> None:
    preview = Numbering().for_preview()

    assert preview.series("invoice", ISSUED) == "PREVIEW-INV-2026-"
    assert prefix_problem("PREVIEW-{year}-") is not None
    assert prefix_problem("preview-") is not None


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("INV-{year}-", None),
        ("ACME/{year}/", None),
        ("F", None),
        ("INV-{month}-", "only {year}"),
        ("INV {year}", "only letters"),
        ("INV-{year", "not a valid template"),
        ("X" * 25, "longer than 24"),
    ],
)
def test_prefixes_a_configuration_may_name(prefix: str, problem: str | None) -> None:
    found = prefix_problem(prefix)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_an_invoice_is_stamped_exactly_as_the_model_writes_it() -> None:
    priced = invoice("東京-0001")
    stamp = Numbering(payment_terms=timedelta(days=14)).stamp(ISSUED)

    body = stamp.invoice_body(priced.model_dump_json(exclude=DRAFT_INVOICE_FIELDS), "INV-2026-000042")

    expected = priced.model_copy(
        update={"number": "INV-2026-000042", "issued_at": ISSUED, "due_at": ISSUED + timedelta(days=14)}
    )
    assert body == expected.model_dump_json()
    assert InvoiceIssued.model_validate_json(body) == expected


def test_a_credit_note_is_stamped_with_its_number_and_names_the_invoice_it_cancels() -> None:
    credited = invoice().model_copy(update={"number": "INV-2026-000007", "issued_at": ISSUED})
    note = credit_note_for(credited, report_id=credited.report_id, revision=2)
    stamp = Numbering().stamp(ISSUED)

    body = stamp.credit_note_body(note.model_dump_json(exclude=DRAFT_CREDIT_NOTE_FIELDS), "CN-2026-000001")

    issued = CreditNoteIssued.model_validate_json(body)
    assert (issued.number, issued.credits_number, issued.issued_at) == (
        "CN-2026-000001",
        "INV-2026-000007",
        ISSUED,
    )
    assert body == issued.model_dump_json()


def test_a_body_already_numbered_is_never_stamped_again() -> None:
    numbered = invoice().model_copy(update={"number": "INV-2026-000001"}).model_dump_json()

    with pytest.raises(ValueError, match="not a draft body"):
        Numbering().stamp(ISSUED).invoice_body(numbered, "INV-2026-000002")
