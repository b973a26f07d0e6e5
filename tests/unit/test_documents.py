"""Invoice and credit note documents: HTML and PDF rendered from stored messages, the loader, the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
import typer
from pypdf import PdfReader
from typer.testing import CliRunner

from accounting.cli import documents as cli_documents
from accounting.core.lifecycle import ReportStatus
from accounting.documents.loader import load_document
from accounting.documents.view import (
    CreditNoteDocument,
    InvoiceDocument,
    document_view,
    render_html,
    render_pdf,
)
from contracts import (
    CreditNoteIssued,
    InvoiceIssued,
    InvoiceLine,
    Period,
    credit_note_id,
    invoice_id,
    report_id,
)

T = TypeVar("T")
PERIOD = "2026-10"
CARD_1 = "sha256:" + "1f" * 32
CARD_2 = "sha256:" + "a0" * 32


def line(
    description: str, tier: int | None, quantity: str, unit: str, price: str, amount: str
) -> InvoiceLine:
    return InvoiceLine(
        item=description.split()[0].lower(),
        description=description,
        tier=tier,
        quantity=Decimal(quantity),
        unit=unit,
        unit_price=Decimal(price),
        amount=Decimal(amount),
    )


def invoice(
    account: str = "acct-0042",
    *,
    revision: int = 1,
    currency: str = "EUR",
    lines: tuple[InvoiceLine, ...] | None = None,
    total: str | None = None,
    supersedes: UUID | None = None,
    card: str = CARD_1,
) -> InvoiceIssued:
    lines = (
        lines
        if lines is not None
        else (
            line("Compute vCPU", 1, "500.000000", "vCPU-hour", "0.0320", "16.00"),
            line("Compute vCPU", 2, "244.000000", "vCPU-hour", "0.0300", "7.32"),
            line("Storage block", None, "12.5", "GB-month", "0.0400", "0.50"),
        )
    )
    amount = Decimal(total) if total is not None else sum((item.amount for item in lines), Decimal(0))
    return InvoiceIssued(
        invoice_id=invoice_id(account, PERIOD, revision),
        report_id=report_id(PERIOD, revision),
        revision=revision,
        account_id=account,
        period=Period.month(PERIOD),
        currency=currency,
        lines=lines,
        subtotal=amount,
        total=amount,
        supersedes=supersedes,
        rate_card=card,
    )


def credit_note(credited: InvoiceIssued, revision: int) -> CreditNoteIssued:
    return CreditNoteIssued(
        credit_note_id=credit_note_id(credited.account_id, PERIOD, revision),
        credits=credited.invoice_id,
        report_id=report_id(PERIOD, revision),
        revision=revision,
        account_id=credited.account_id,
        period=credited.period,
        currency=credited.currency,
        lines=credited.lines,
        subtotal=credited.subtotal,
        total=credited.total,
    )


@dataclass
class History:
    """Revision 1 issued, a forced replay (revision 2) credited and corrected it."""

    first: InvoiceIssued
    note: CreditNoteIssued
    corrected: InvoiceIssued


def history() -> History:
    first = invoice()
    corrected = invoice(
        revision=2,
        lines=(line("Compute vCPU", 1, "400.000000", "vCPU-hour", "0.0320", "12.80"),),
        supersedes=first.invoice_id,
        card=CARD_2,
    )
    return History(first=first, note=credit_note(first, 2), corrected=corrected)


def pdf_text(data: bytes) -> str:
    """Every page's text, whitespace collapsed (table cells and wrapped lines become single spaces).

    pypdf reads the CJK fallback font's two-byte codes with a NUL before each character (MuPDF
    reads them exactly): the NULs are dropped."""
    assert data.startswith(b"%PDF-")
    reader = PdfReader(BytesIO(data))
    return " ".join(
        " ".join((page.extract_text() or "").replace("\x00", "").split()) for page in reader.pages
    )


def row_text(item: InvoiceLine) -> str:
    tier = "" if item.tier is None else f" {item.tier}"
    return f"{item.description} {item.item}{tier} {item.quantity} {item.unit} {item.unit_price} {item.amount}"


# --- a first invoice -------------------------------------------------------------------------


def test_the_pdf_shows_everything_an_invoice_says() -> None:
    issued = invoice()
    text = pdf_text(render_pdf(InvoiceDocument(invoice=issued, report_status="completed")))

    assert f"Invoice {issued.invoice_id}" in text
    assert "Account acct-0042" in text
    assert "Period 2026-10" in text
    assert "Period start 2026-10-01 00:00:00 UTC" in text
    assert "Period end (exclusive) 2026-11-01 00:00:00 UTC" in text
    assert f"Report {issued.report_id}" in text
    assert "Report revision 1" in text
    assert "Report status completed" in text
    assert f"Rate card {CARD_1}" in text
    assert "Currency EUR" in text
    for item in issued.lines:
        assert row_text(item) in text
    assert "Subtotal €23.82" in text
    assert "Total €23.82" in text
    assert "Supersedes" not in text
    assert "CANCELLED" not in text


def test_the_same_invoice_renders_to_the_same_pdf_bytes_whenever_it_is_rendered() -> None:
    """The PDF's creation date is the document's (its period's end), never the clock's."""
    document = InvoiceDocument(invoice=invoice(), report_status="completed")
    first = render_pdf(document)
    time.sleep(1.1)  # the PDF's dates have a resolution of one second

    assert render_pdf(document) == first
    metadata = PdfReader(BytesIO(first)).metadata
    assert metadata is not None and str(metadata["/CreationDate"]).startswith("D:20261101000000")


def test_the_html_shows_everything_an_invoice_says() -> None:
    issued = invoice()
    html = render_html(InvoiceDocument(invoice=issued, report_status="publishing"))

    assert html.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in html
    for value in (
        str(issued.invoice_id),
        str(issued.report_id),
        "acct-0042",
        "2026-10-01 00:00:00 UTC",
        "2026-11-01 00:00:00 UTC",
        "publishing",
        CARD_1,
        "500.000000",
        "244.000000",
        "0.0320",
        "16.00",
        "7.32",
        "GB-month",
        "€23.82",
    ):
        assert value in html
    assert html.count('<td class="num">2</td>') == 1  # the tier of the second line


def test_html_escapes_what_it_is_given() -> None:
    issued = invoice(
        account="acct-<script>alert(1)</script>",
        lines=(line("Storage <b>bold</b> & co", None, "1", "GB", "0.10", "0.10"),),
    )
    html = render_html(InvoiceDocument(invoice=issued, report_status="completed"))

    assert "<script>" not in html
    assert "acct-&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Storage &lt;b&gt;bold&lt;/b&gt; &amp; co" in html


@pytest.mark.parametrize(
    ("currency", "price", "amount", "written"),
    [
        ("JPY", "0.33", "33", "¥33"),
        ("BHD", "0.0123", "1.234", "BHD1.234"),
        ("EUR", "0.10", "10.00", "€10.00"),
    ],
)
def test_money_and_quantities_print_exactly_as_stored(
    currency: str, price: str, amount: str, written: str
) -> None:
    quantity = "100.000000000000000001"  # 21 significant digits: a float would lose the last one
    issued = invoice(
        currency=currency, lines=(line("Compute vCPU", None, quantity, "vCPU-hour", price, amount),)
    )
    document = InvoiceDocument(invoice=issued, report_status="completed")

    text = pdf_text(render_pdf(document))
    html = render_html(document)

    assert quantity in "".join(text.split())  # a number this long may wrap in its column
    assert quantity in html
    for rendered in (text, html):
        assert f">{amount}<" in html  # the line's amount, exactly as stored
        assert written in rendered  # the totals, written for the currency (babel)
    assert f"Total {written}" in text


def test_an_exponent_is_printed_as_plain_digits() -> None:
    issued = invoice(lines=(line("Egress data", None, "1E+3", "GB", "0.05", "5E+1"),), total="50")

    view = document_view(InvoiceDocument(invoice=issued, report_status="completed"))

    assert (view.rows[0].quantity, view.rows[0].amount) == ("1000", "50")


def test_an_invoice_without_lines_says_so() -> None:
    issued = invoice(lines=(), total="0.00")
    document = InvoiceDocument(invoice=issued, report_status="completed")

    assert "No billable usage in this period." in pdf_text(render_pdf(document))
    assert "No billable usage in this period." in render_html(document)


def test_a_long_invoice_runs_over_pages_with_every_line() -> None:
    lines = tuple(
        line(f"Compute vCPU tier {n}", n, f"{n}.5", "vCPU-hour", "0.0100", f"{n}.01") for n in range(1, 81)
    )
    data = render_pdf(InvoiceDocument(invoice=invoice(lines=lines), report_status="completed"))

    pages = len(PdfReader(BytesIO(data)).pages)
    text = pdf_text(data)

    assert pages > 1
    assert f"page {pages}/{pages}" in text
    assert text.count("Description Item Tier Quantity Unit") == pages  # headings on every page
    for item in lines:
        assert row_text(item) in text


# --- characters outside the PDF font ----------------------------------------------------------


def test_any_latin_greek_cyrillic_or_cjk_account_prints_as_stored() -> None:
    account = "acct-Łódź-東京-Ωμέγα-Пётр-서울"
    issued = invoice(
        account=account, lines=(line("Storage \u2013 Zürich, 5 € → more", None, "1", "GB", "0.10", "0.10"),)
    )
    document = InvoiceDocument(invoice=issued, report_status="completed")
    data = render_pdf(document)
    text = pdf_text(data)

    assert f"Account {account}" in text
    assert "Storage \u2013 Zürich, 5 € → more" in text
    assert "<U+" not in text
    fonts = {font for page in PdfReader(BytesIO(data)).pages for font in _font_names(page)}
    assert any("DejaVuSans" in font for font in fonts) and any("NotoSansCJK" in font for font in fonts)


def _font_names(page: Any) -> list[str]:
    resources = page["/Resources"]["/Font"]
    return [str(resources[name].get_object()["/BaseFont"]) for name in resources]


def test_characters_outside_the_pdf_fonts_are_replaced_visibly() -> None:
    account = "acct-தமிழ்"  # Tamil: neither DejaVu Sans nor Noto Sans CJK has it
    issued = invoice(account=account)
    document = InvoiceDocument(invoice=issued, report_status="completed")
    data = render_pdf(document)
    text = pdf_text(data)

    assert "acct-<U+0BA4><U+0BAE><U+0BBF><U+0BB4><U+0BCD>" in text
    assert "stands for a character this PDF's font cannot show" in text
    metadata = PdfReader(BytesIO(data)).metadata
    assert metadata is not None
    assert metadata.subject == f"account {account}, period {PERIOD}"  # exact, in Unicode
    assert metadata.title == f"Invoice {issued.invoice_id}"
    assert account in render_html(document)


def test_no_footnote_when_nothing_was_replaced() -> None:
    document = InvoiceDocument(invoice=invoice(account="acct-Müller"), report_status="completed")
    text = pdf_text(render_pdf(document))

    assert "Account acct-Müller" in text
    assert "<U+" not in text


# --- corrections ------------------------------------------------------------------------------


def test_a_corrected_invoice_names_what_it_supersedes_and_the_credit_note() -> None:
    h = history()
    document = InvoiceDocument(
        invoice=h.corrected, report_status="completed", corrects=h.first, credit_note=h.note
    )
    text = pdf_text(render_pdf(document))
    html = render_html(document)

    assert f"Supersedes invoice {h.first.invoice_id}" in text
    assert f"Credit note {h.note.credit_note_id}" in text
    assert "Report revision 2" in text
    assert f"Rate card {CARD_2}" in text
    assert (
        f"This invoice corrects invoice {h.first.invoice_id} (revision 1, total €23.82), "
        f"which credit note {h.note.credit_note_id} cancelled in full (credited €23.82)"
    ) in text
    assert "Total €12.80" in text
    for value in (str(h.first.invoice_id), str(h.note.credit_note_id), "credited €23.82"):
        assert value in html
    assert "CANCELLED" not in text


def test_a_correction_whose_predecessors_are_not_in_the_store_still_says_what_it_supersedes() -> None:
    h = history()
    text = pdf_text(render_pdf(InvoiceDocument(invoice=h.corrected, report_status="completed")))

    assert f"Supersedes invoice {h.first.invoice_id}" in text
    assert "the credit note that cancelled it is not in the store" in text


def test_a_credited_invoice_says_it_is_cancelled_and_by_what_it_is_corrected() -> None:
    h = history()
    document = InvoiceDocument(
        invoice=h.first, report_status="completed", credited_by=h.note, corrected_by=h.corrected
    )
    text = pdf_text(render_pdf(document))
    html = render_html(document)

    assert text.startswith("CANCELLED Invoice ")
    assert f"Cancelled by credit note {h.note.credit_note_id}" in text
    assert f"corrected by invoice {h.corrected.invoice_id} (total €12.80)" in text
    assert "This invoice is no longer owed" in text
    assert f"Corrected by invoice {h.corrected.invoice_id}" in text
    assert 'class="banner">CANCELLED<' in html
    assert f"corrected by invoice {h.corrected.invoice_id}" in html


def test_a_credit_note_names_the_invoice_it_cancels() -> None:
    h = history()
    document = CreditNoteDocument(
        credit_note=h.note, report_status="completed", credited=h.first, correction=h.corrected
    )
    text = pdf_text(render_pdf(document))
    html = render_html(document)

    assert f"Credit note {h.note.credit_note_id}" in text
    assert f"Credits invoice {h.first.invoice_id}" in text
    cancels = f"This credit note cancels invoice {h.first.invoice_id} in full (revision 1, total €23.82)"
    assert cancels in text
    assert f"invoice {h.corrected.invoice_id} (revision 2, total €12.80) corrects it" in text
    assert f"Rate card (credited invoice) {CARD_1}" in text
    assert "Account acct-0042" in text
    assert "Report revision 2" in text
    for item in h.note.lines:
        assert row_text(item) in text
    assert "Total credited €23.82" in text
    assert "Total credited" in html
    assert str(h.first.invoice_id) in html


def test_a_document_refuses_relations_that_do_not_hold() -> None:
    h = history()
    other = invoice(account="acct-other")
    with pytest.raises(ValueError, match="does not supersede"):
        InvoiceDocument(invoice=h.corrected, report_status="completed", corrects=other)
    with pytest.raises(ValueError, match="does not cancel"):
        InvoiceDocument(invoice=other, report_status="completed", credited_by=h.note)
    with pytest.raises(ValueError, match="does not cancel the invoice"):
        InvoiceDocument(invoice=h.first, report_status="completed", credit_note=h.note)
    with pytest.raises(ValueError, match="cancels"):
        CreditNoteDocument(credit_note=h.note, report_status="completed", credited=other)


# --- the loader -------------------------------------------------------------------------------


@dataclass
class _Record:
    status: ReportStatus


@dataclass
class FakeStore:
    """The store's read API over lists, with the same filters."""

    invoice_rows: list[InvoiceIssued] = field(default_factory=list)
    note_rows: list[CreditNoteIssued] = field(default_factory=list)

    async def get(self, report_id: UUID) -> Any:
        revisions = {item.report_id for item in self.invoice_rows} | {n.report_id for n in self.note_rows}
        return _Record(ReportStatus.COMPLETED) if report_id in revisions else None

    async def invoices(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        invoice_id: UUID | None = None,
        account_id: str | None = None,
        drafts: bool = False,
    ) -> list[InvoiceIssued]:
        return [
            item
            for item in self.invoice_rows
            if report_id in (None, item.report_id)
            and period_id in (None, item.period.period_id)
            and invoice_id in (None, item.invoice_id)
            and account_id in (None, item.account_id)
        ]

    async def credit_notes(
        self,
        *,
        report_id: UUID | None = None,
        period_id: str | None = None,
        credit_note_id: UUID | None = None,
        credits: UUID | None = None,
        drafts: bool = False,
    ) -> list[CreditNoteIssued]:
        return [
            note
            for note in self.note_rows
            if report_id in (None, note.report_id)
            and period_id in (None, note.period.period_id)
            and credit_note_id in (None, note.credit_note_id)
            and credits in (None, note.credits)
        ]


def fake_store() -> tuple[FakeStore, History]:
    h = history()
    neighbour = invoice(account="acct-0001")
    return FakeStore([neighbour, h.first, h.corrected], [h.note]), h


async def test_the_loader_finds_an_invoice_with_its_corrections() -> None:
    store, h = fake_store()

    first = await load_document(store, h.first.invoice_id)
    corrected = await load_document(store, h.corrected.invoice_id)

    assert first == InvoiceDocument(
        invoice=h.first,
        report_status="completed",
        credited_by=h.note,
        corrected_by=h.corrected,
        owed_now=h.corrected,
    )
    assert corrected == InvoiceDocument(
        invoice=h.corrected, report_status="completed", corrects=h.first, credit_note=h.note
    )


async def test_a_cancelled_invoice_points_to_the_invoice_owed_now_at_the_end_of_the_chain() -> None:
    """Revision 1 corrected by 2, which 3 corrected in turn, which 4 corrected: revision 1's
    document names revision 4's invoice as the one owed, not revision 2's."""
    store, h = fake_store()
    chain = [h.first, h.corrected]
    for revision in (3, 4):
        previous = chain[-1]
        store.note_rows.append(credit_note(previous, revision))
        chain.append(
            invoice(
                revision=revision,
                lines=(
                    line(
                        "Compute vCPU",
                        1,
                        f"{revision}00.000000",
                        "vCPU-hour",
                        "0.0320",
                        f"{revision * 3.2:.2f}",
                    ),
                ),
                supersedes=previous.invoice_id,
            ).model_copy(update={"number": f"INV-2026-00000{revision}"})
        )
        store.invoice_rows.append(chain[-1])

    first = await load_document(store, h.first.invoice_id)

    assert isinstance(first, InvoiceDocument)
    assert (first.corrected_by, first.owed_now) == (h.corrected, chain[-1])
    text = pdf_text(render_pdf(first))
    assert (
        f"the invoice owed now is INV-2026-000004 ({chain[-1].invoice_id}) (revision 4, total €12.80)" in text
    )
    assert f"Owed now: invoice INV-2026-000004 ({chain[-1].invoice_id})" in text


async def test_the_loader_finds_a_credit_note() -> None:
    store, h = fake_store()

    found = await load_document(store, h.note.credit_note_id)

    assert found == CreditNoteDocument(
        credit_note=h.note, report_status="completed", credited=h.first, correction=h.corrected
    )


async def test_the_loader_finds_the_correction_even_under_an_unexpected_id() -> None:
    store, h = fake_store()
    moved = h.corrected.model_copy(update={"invoice_id": UUID(int=7)})
    store.invoice_rows = [h.first, moved]

    found = await load_document(store, h.first.invoice_id)

    assert isinstance(found, InvoiceDocument)
    assert found.corrected_by == moved


async def test_the_loader_answers_none_for_an_unknown_id() -> None:
    store, _ = fake_store()

    assert await load_document(store, UUID(int=1)) is None


# --- the command ------------------------------------------------------------------------------


Cli = tuple[typer.Typer, History]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    store, h = fake_store()

    def store_command(config: Path | None, work: Callable[[Any], Awaitable[T]], create: bool = False) -> T:
        async def main() -> T:
            return await work(store)

        return asyncio.run(main())

    monkeypatch.setattr(cli_documents, "store_command", store_command)
    app = typer.Typer()
    invoices_app = typer.Typer()
    app.add_typer(invoices_app, name="invoices")
    cli_documents.register(invoices_app)
    return app, h


def test_render_writes_html_to_stdout(cli: Cli) -> None:
    app, h = cli

    result = CliRunner().invoke(app, ["invoices", "render", str(h.corrected.invoice_id)])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert str(h.note.credit_note_id) in result.stdout


def test_render_writes_a_pdf_to_a_file(cli: Cli, tmp_path: Path) -> None:
    app, h = cli
    out = tmp_path / "note.pdf"

    result = CliRunner().invoke(
        app, ["invoices", "render", str(h.note.credit_note_id), "--format", "pdf", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert f"credit note {h.note.credit_note_id} written to" in result.output
    assert f"Credits invoice {h.first.invoice_id}" in pdf_text(out.read_bytes())
    assert [path.name for path in tmp_path.iterdir()] == ["note.pdf"]  # no temporary file left


def test_render_refuses_a_pdf_to_a_terminal(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    app, h = cli
    monkeypatch.setattr(cli_documents, "stdout_is_terminal", lambda: True)

    result = CliRunner().invoke(app, ["invoices", "render", str(h.first.invoice_id), "--format", "pdf"])

    assert result.exit_code == 2
    assert "--out" in result.output


def test_render_writes_a_pdf_to_a_pipe(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    app, h = cli
    monkeypatch.setattr(cli_documents, "stdout_is_terminal", lambda: False)

    result = CliRunner().invoke(app, ["invoices", "render", str(h.first.invoice_id), "-f", "pdf"])

    assert result.exit_code == 0, result.output
    assert "CANCELLED" in pdf_text(result.stdout_bytes)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (str(UUID(int=1)), f"no invoice or credit note {UUID(int=1)} in the store"),
        ("INV-1", "'INV-1' is not an invoice or credit note id"),
    ],
)
def test_render_refuses_what_is_not_in_the_store(cli: Cli, document: str, message: str) -> None:
    app, _ = cli

    result = CliRunner().invoke(app, ["invoices", "render", document])

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
