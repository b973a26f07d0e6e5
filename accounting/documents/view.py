"""Invoice and credit note documents (HTML and PDF), rendered from stored messages only.

Pure: a document (the stored messages it is made of) in, ``str`` or ``bytes`` out; the loader that
reads them from the store is ``accounting.documents.loader``. Both formats are drawn from one
:class:`DocumentView`, so they always say the same thing. Money and quantities are printed exactly
as stored (already rounded to the currency's minor unit: ``33`` JPY, ``1.234`` BHD), never through
a float. The PDF's handling of characters outside its font is in ``accounting.documents.pdf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from uuid import UUID

import jinja2

from accounting.documents.pdf import render_view_pdf
from contracts import CreditNoteIssued, InvoiceIssued, InvoiceLine, Period


@dataclass(frozen=True)
class InvoiceDocument:
    """An invoice with what the store knows of the corrections around it."""

    invoice: InvoiceIssued
    report_status: str
    """Status of the report revision that issued it (``completed``, ``publishing``)."""
    corrects: InvoiceIssued | None = None
    """The invoice this one supersedes (``invoice.supersedes``), when it is in the store."""
    credit_note: CreditNoteIssued | None = None
    """The credit note that cancelled ``invoice.supersedes`` (issued with this invoice)."""
    credited_by: CreditNoteIssued | None = None
    """A later credit note cancelling this invoice: it was corrected."""
    corrected_by: InvoiceIssued | None = None
    """The invoice that corrected this one (it names this one in ``supersedes``)."""

    def __post_init__(self) -> None:
        invoice = self.invoice
        if self.corrects is not None and self.corrects.invoice_id != invoice.supersedes:
            raise ValueError(f"invoice {invoice.invoice_id} does not supersede {self.corrects.invoice_id}")
        if self.credit_note is not None and (
            invoice.supersedes is None or self.credit_note.credits != invoice.supersedes
        ):
            raise ValueError(
                f"credit note {self.credit_note.credit_note_id} does not cancel the invoice that "
                f"invoice {invoice.invoice_id} supersedes"
            )
        if self.credited_by is not None and self.credited_by.credits != invoice.invoice_id:
            raise ValueError(
                f"credit note {self.credited_by.credit_note_id} does not cancel invoice {invoice.invoice_id}"
            )
        if self.corrected_by is not None and self.corrected_by.supersedes != invoice.invoice_id:
            raise ValueError(
                f"invoice {self.corrected_by.invoice_id} does not supersede invoice {invoice.invoice_id}"
            )


@dataclass(frozen=True)
class CreditNoteDocument:
    """A credit note with the invoice it cancels and the invoice that corrects that one."""

    credit_note: CreditNoteIssued
    report_status: str
    """Status of the report revision that issued it."""
    credited: InvoiceIssued | None = None
    """The invoice it cancels (``credit_note.credits``), when it is in the store."""
    correction: InvoiceIssued | None = None
    """The corrected invoice issued with it (``supersedes == credit_note.credits``)."""

    def __post_init__(self) -> None:
        credits = self.credit_note.credits
        if self.credited is not None and self.credited.invoice_id != credits:
            raise ValueError(
                f"credit note {self.credit_note.credit_note_id} cancels {credits}, "
                f"not {self.credited.invoice_id}"
            )
        if self.correction is not None and self.correction.supersedes != credits:
            raise ValueError(f"invoice {self.correction.invoice_id} does not supersede invoice {credits}")


Document = InvoiceDocument | CreditNoteDocument


@dataclass(frozen=True)
class LineRow:
    """One invoice line, every field already text."""

    description: str
    item: str
    tier: str
    quantity: str
    unit: str
    unit_price: str
    amount: str


@dataclass(frozen=True)
class DocumentView:
    """What a document shows, as text, in the order it shows it; both formats draw this."""

    heading: str
    """``Invoice`` or ``Credit note``."""
    document_id: str
    banner: str | None
    """A word shown large above the document (``CANCELLED``), or None."""
    facts: tuple[tuple[str, str], ...]
    notices: tuple[str, ...]
    rows: tuple[LineRow, ...]
    subtotal: str
    total: str
    total_label: str
    currency: str
    account_id: str
    period_id: str
    dated: datetime
    """The moment the document is dated by (its period's end, until documents carry an issue
    date): the PDF's creation date, so the same document always renders to the same bytes."""

    @property
    def title(self) -> str:
        return f"{self.heading} {self.document_id}"


def render_html(document: Document) -> str:
    """The document as one self-contained HTML page (UTF-8, no external resources)."""
    return _templates().get_template("invoice.html.j2").render(view=document_view(document))


def render_pdf(document: Document) -> bytes:
    """The document as a PDF (A4)."""
    return render_view_pdf(document_view(document))


def document_view(document: Document) -> DocumentView:
    if isinstance(document, InvoiceDocument):
        return _invoice_view(document)
    return _credit_note_view(document)


def amount(value: Decimal) -> str:
    """A stored decimal exactly as stored: every digit kept, never an exponent, never a float."""
    return format(value, "f")


def money(value: Decimal, currency: str) -> str:
    return f"{amount(value)} {currency}"


def moment(value: datetime) -> str:
    """A UTC datetime as ``2026-10-01 00:00:00 UTC`` (microseconds only when there are some)."""
    return f"{value.isoformat(sep=' ').removesuffix('+00:00')} UTC"


def _period_facts(period: Period) -> tuple[tuple[str, str], ...]:
    return (
        ("Period", period.period_id),
        ("Period start", moment(period.start)),
        ("Period end (exclusive)", moment(period.end)),
    )


def _rows(lines: tuple[InvoiceLine, ...]) -> tuple[LineRow, ...]:
    return tuple(
        LineRow(
            description=line.description,
            item=line.item,
            tier="" if line.tier is None else str(line.tier),
            quantity=amount(line.quantity),
            unit=line.unit,
            unit_price=amount(line.unit_price),
            amount=amount(line.amount),
        )
        for line in lines
    )


def _invoice_view(document: InvoiceDocument) -> DocumentView:
    invoice = document.invoice
    facts: list[tuple[str, str]] = [
        ("Account", invoice.account_id),
        ("Invoice", str(invoice.invoice_id)),
        *_period_facts(invoice.period),
        ("Currency", invoice.currency),
        ("Report", str(invoice.report_id)),
        ("Report revision", str(invoice.revision)),
        ("Report status", document.report_status),
        ("Rate card", invoice.rate_card),
    ]
    notices: list[str] = []
    if invoice.supersedes is not None:
        facts.append(("Supersedes invoice", str(invoice.supersedes)))
        if document.credit_note is not None:
            facts.append(("Credit note", str(document.credit_note.credit_note_id)))
        notices.append(_correction_notice(document, invoice.supersedes))
    banner = None
    if document.credited_by is not None:
        banner = "CANCELLED"
        facts.append(("Cancelled by credit note", str(document.credited_by.credit_note_id)))
        if document.corrected_by is not None:
            facts.append(("Corrected by invoice", str(document.corrected_by.invoice_id)))
        notices.append(_cancelled_notice(document, document.credited_by))
    return DocumentView(
        heading="Invoice",
        document_id=str(invoice.invoice_id),
        banner=banner,
        facts=tuple(facts),
        notices=tuple(notices),
        rows=_rows(invoice.lines),
        subtotal=amount(invoice.subtotal),
        total=amount(invoice.total),
        total_label="Total",
        currency=invoice.currency,
        account_id=invoice.account_id,
        period_id=invoice.period.period_id,
        dated=invoice.period.end,
    )


def _correction_notice(document: InvoiceDocument, superseded: UUID) -> str:
    invoice, corrects, credit_note = document.invoice, document.corrects, document.credit_note
    text = f"This invoice corrects invoice {superseded}"
    if corrects is not None:
        text += f" (revision {corrects.revision}, total {money(corrects.total, corrects.currency)})"
    if credit_note is not None:
        text += (
            f", which credit note {credit_note.credit_note_id} cancelled in full "
            f"(credited {money(credit_note.total, credit_note.currency)})"
        )
    else:
        text += "; the credit note that cancelled it is not in the store"
    return (
        f"{text}. After the credit note, the account owes what this invoice says: "
        f"{money(invoice.total, invoice.currency)}."
    )


def _cancelled_notice(document: InvoiceDocument, credited_by: CreditNoteIssued) -> str:
    text = (
        f"Cancelled by credit note {credited_by.credit_note_id} "
        f"(revision {credited_by.revision}, credited {money(credited_by.total, credited_by.currency)})"
    )
    corrected_by = document.corrected_by
    if corrected_by is None:
        return f"{text}; the invoice that corrects it is not in the store. This invoice is no longer owed."
    return (
        f"{text}, corrected by invoice {corrected_by.invoice_id} "
        f"(total {money(corrected_by.total, corrected_by.currency)}). This invoice is no longer owed; "
        f"the corrected invoice is."
    )


def _credit_note_view(document: CreditNoteDocument) -> DocumentView:
    note = document.credit_note
    facts: list[tuple[str, str]] = [
        ("Account", note.account_id),
        ("Credit note", str(note.credit_note_id)),
        ("Credits invoice", str(note.credits)),
        *_period_facts(note.period),
        ("Currency", note.currency),
        ("Report", str(note.report_id)),
        ("Report revision", str(note.revision)),
        ("Report status", document.report_status),
    ]
    credited, correction = document.credited, document.correction
    if credited is not None:
        facts.append(("Rate card (credited invoice)", credited.rate_card))
    if correction is not None:
        facts.append(("Corrected by invoice", str(correction.invoice_id)))
    text = f"This credit note cancels invoice {note.credits} in full"
    if credited is not None:
        text += f" (revision {credited.revision}, total {money(credited.total, credited.currency)})"
    else:
        text += " (that invoice is not in the store)"
    if correction is not None:
        text += (
            f"; invoice {correction.invoice_id} (revision {correction.revision}, "
            f"total {money(correction.total, correction.currency)}) corrects it"
        )
    return DocumentView(
        heading="Credit note",
        document_id=str(note.credit_note_id),
        banner=None,
        facts=tuple(facts),
        notices=(f"{text}. The lines below are the cancelled invoice's lines.",),
        rows=_rows(note.lines),
        subtotal=amount(note.subtotal),
        total=amount(note.total),
        total_label="Total credited",
        currency=note.currency,
        account_id=note.account_id,
        period_id=note.period.period_id,
        dated=note.period.end,
    )


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("accounting.documents", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
