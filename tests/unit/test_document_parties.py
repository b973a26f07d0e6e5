"""Documents a customer can receive: numbered and dated, from a seller to a buyer (from the account
directory), money and dates written for the locale, DRAFT and PREVIEW said on the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from accounting.documents.parties import DirectoryError, DocumentContext, find_in_directory, party
from accounting.documents.view import CreditNoteDocument, InvoiceDocument, render_html, render_pdf
from tests.unit.test_documents import credit_note, invoice, pdf_text

ISSUED = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 1 December already, in Paris
SELLER = party(
    "Reckon Demo Cloud GmbH", ["Hauptstraße 1", "10115 Berlin"], "DE123456789", "billing@example.com"
)
DIRECTORY = (
    "account_id,name,address,tax_id,email\n"
    'acct-0042,Müller & Söhne KG,"Kö 12\n40212 Düsseldorf",DE987654321,ap@mueller.example\n'
    "acct-東京,株式会社 東京クラウド,東京都港区 1-2-3,,\n"
)


def issued(account: str = "acct-0042", number: str = "INV-2026-000123") -> InvoiceDocument:
    stamped = invoice(account).model_copy(
        update={"number": number, "issued_at": ISSUED, "due_at": ISSUED + timedelta(days=30)}
    )
    return InvoiceDocument(invoice=stamped, report_status="completed")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.csv"
    path.write_text(DIRECTORY, encoding="utf-8")
    return path


def test_an_issued_invoice_names_seller_buyer_number_and_dates(directory: Path) -> None:
    document = issued()
    context = DocumentContext(
        seller=SELLER, buyer=find_in_directory(directory, "acct-0042"), zone=ZoneInfo("Europe/Paris")
    )

    text = pdf_text(render_pdf(document, context))
    html = render_html(document, context)

    assert text.startswith("Invoice INV-2026-000123 From To Reckon Demo Cloud GmbH")
    for expected in (
        "Hauptstraße 1 10115 Berlin Tax id: DE123456789 billing@example.com",
        "Müller & Söhne KG Kö 12 40212 Düsseldorf Tax id: DE987654321",
        "Invoice number INV-2026-000123",
        "Issue date December 1, 2026",  # the calendar's time zone decides the day
        "Due date December 31, 2026",
        "Total €23.82",
    ):
        assert expected in text
    assert "Müller &amp; Söhne KG<br>Kö 12<br>40212 Düsseldorf" in html


def test_a_non_latin_buyer_prints_as_stored(directory: Path) -> None:
    context = DocumentContext(seller=SELLER, buyer=find_in_directory(directory, "acct-東京"))

    text = pdf_text(render_pdf(issued("acct-東京"), context))

    assert "株式会社 東京クラウド 東京都港区 1-2-3 Account acct-東京" in text
    assert "<U+" not in text


def test_money_and_dates_are_written_for_the_locale() -> None:
    text = pdf_text(render_pdf(issued(), DocumentContext(locale="de_DE")))

    assert "Total 23,82 €" in text
    assert "Issue date 30. November 2026" in text


def test_an_account_without_a_directory_entry_is_named_by_its_id(directory: Path) -> None:
    assert find_in_directory(directory, "acct-unknown") is None
    text = pdf_text(render_pdf(issued("acct-unknown"), DocumentContext(seller=SELLER)))

    assert (
        "Reckon Demo Cloud GmbH Hauptstraße 1 10115 Berlin Tax id: DE123456789 billing@example.com "
        "Account acct-unknown" in text
    )


def test_a_directory_without_the_columns_it_needs_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("id,company\nacct-1,ACME\n", encoding="utf-8")

    with pytest.raises(DirectoryError, match=r"accounts.csv: the header lacks account_id, name"):
        find_in_directory(path, "acct-1")
    with pytest.raises(DirectoryError, match="No such file"):
        find_in_directory(tmp_path / "missing.csv", "acct-1")


def test_a_draft_says_draft_and_has_no_number_yet() -> None:
    draft = InvoiceDocument(invoice=invoice(), report_status="draft")

    text = pdf_text(render_pdf(draft))

    assert text.startswith("DRAFT Invoice")
    assert "Invoice number none yet: a draft awaiting approval" in text
    assert 'class="banner">DRAFT<' in render_html(draft)


def test_a_preview_says_preview() -> None:
    text = pdf_text(render_pdf(issued(number="PREVIEW-INV-2026-000001")))

    assert text.startswith("PREVIEW Invoice PREVIEW-INV-2026-000001")


def test_a_credit_note_names_its_number_and_the_number_of_the_invoice_it_cancels() -> None:
    first = issued().invoice
    note = credit_note(first, 2).model_copy(
        update={"number": "CN-2026-000007", "credits_number": first.number, "issued_at": ISSUED}
    )
    text = pdf_text(render_pdf(CreditNoteDocument(credit_note=note, report_status="completed")))

    assert text.startswith("Credit note CN-2026-000007")
    assert f"Credits invoice INV-2026-000123 ({first.invoice_id})" in text
    assert "Total credited €23.82" in text


def test_an_issued_document_is_dated_by_its_issue_and_renders_to_the_same_bytes() -> None:
    document = issued()

    first = render_pdf(document, DocumentContext(seller=SELLER))

    assert render_pdf(document, DocumentContext(seller=SELLER)) == first
    metadata = PdfReader(BytesIO(first)).metadata
    assert metadata is not None and str(metadata["/CreationDate"]).startswith("D:20261130233000")
