"""What the payment consumer takes from each routing key, and what a document adds to a balance."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from accounting.core.corrections import credit_note_for
from contracts import CreditNoteIssued, InvoiceIssued, invoice_id, report_id
from payments.consumer import parse_document
from payments.ledger import amount_owed, document_id
from tests.invoices import sample_invoice

FIRST = sample_invoice("acme", total="32.00")
NOTE = credit_note_for(FIRST, report_id=report_id("2026-10", 2), revision=2)
CORRECTED = sample_invoice("acme", total="28.80").model_copy(
    update={"invoice_id": invoice_id("acme", "2026-10", 2), "supersedes": FIRST.invoice_id}
)


def test_each_routing_key_carries_its_own_kind_of_document() -> None:
    assert parse_document("invoice.issued", FIRST.to_json()) == FIRST
    assert parse_document("credit_note.issued", NOTE.to_json()) == NOTE
    assert parse_document("invoice.corrected", CORRECTED.to_json()) == CORRECTED


def test_a_correction_sent_as_a_first_invoice_is_refused_so_it_is_never_charged_twice() -> None:
    with pytest.raises(ValueError, match=r"corrections come on invoice\.corrected"):
        parse_document("invoice.issued", CORRECTED.to_json())


def test_a_corrected_invoice_must_name_what_it_supersedes() -> None:
    with pytest.raises(ValueError, match="names no invoice it supersedes"):
        parse_document("invoice.corrected", FIRST.to_json())


def test_an_invoice_sent_as_a_credit_note_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_document("credit_note.issued", FIRST.to_json())


def test_a_1x_invoice_reader_refuses_a_2_0_invoice_instead_of_misreading_it() -> None:
    old = {**FIRST.model_dump(mode="json"), "schema_version": "1.1"}

    with pytest.raises(ValidationError, match="this build reads major version 2"):
        InvoiceIssued.model_validate(old)


def test_after_a_credit_note_and_its_correction_the_account_owes_the_corrected_total() -> None:
    owed = sum((amount_owed(document) for document in (FIRST, NOTE, CORRECTED)), Decimal(0))

    assert owed == Decimal("28.80")
    assert (document_id(NOTE), NOTE.credits) == (NOTE.credit_note_id, FIRST.invoice_id)
    assert isinstance(NOTE, CreditNoteIssued)
