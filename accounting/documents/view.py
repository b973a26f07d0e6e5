"""Invoice and credit note documents (HTML and PDF), rendered from stored messages only.

Pure: a document (the stored messages it is made of) and its context (seller, buyer, locale, time
zone) in, ``str`` or ``bytes`` out; the loader that reads them from the store is
``accounting.documents.loader``. Both formats are drawn from one :class:`DocumentView`, so they
always say the same thing. Totals are written for the currency and locale (babel); line
quantities, unit prices and amounts exactly as stored, never through a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from uuid import UUID

import jinja2

from accounting.core.numbering import PREVIEW_PREFIX
from accounting.documents.formatting import amount, day, moment, money
from accounting.documents.model import CreditNoteDocument, Document, InvoiceDocument
from accounting.documents.parties import DocumentContext
from accounting.documents.pdf import render_view_pdf
from contracts import CreditNoteIssued, InvoiceIssued, InvoiceLine, Period

__all__ = [
    "CreditNoteDocument",
    "Document",
    "DocumentView",
    "InvoiceDocument",
    "amount",
    "document_view",
    "render_html",
    "render_pdf",
]

PLAIN = DocumentContext()


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
    """``Invoice`` or ``Credit note``, with its number when it has one."""
    document_id: str
    banner: str | None
    """A word shown large above the document (``DRAFT``, ``PREVIEW``, ``CANCELLED``), or None."""
    seller: tuple[str, ...]
    """The seller's lines (name, address, tax id), empty when none is configured."""
    buyer: tuple[str, ...]
    """Who the document is to: the account directory's entry, or the account id alone."""
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
    """The moment the document is dated by (its issue, else its period's end): the PDF's creation
    date, so the same document always renders to the same bytes."""

    @property
    def title(self) -> str:
        return f"{self.heading} {self.document_id}"


def render_html(document: Document, context: DocumentContext = PLAIN) -> str:
    """The document as one self-contained HTML page (UTF-8, no external resources)."""
    return _templates().get_template("invoice.html.j2").render(view=document_view(document, context))


def render_pdf(document: Document, context: DocumentContext = PLAIN) -> bytes:
    """The document as a PDF (A4), its font embedded."""
    return render_view_pdf(document_view(document, context))


def document_view(document: Document, context: DocumentContext = PLAIN) -> DocumentView:
    if isinstance(document, InvoiceDocument):
        return _invoice_view(document, context)
    return _credit_note_view(document, context)


def _period_facts(period: Period) -> tuple[tuple[str, str], ...]:
    return (
        ("Period", period.period_id),
        ("Period start", moment(period.start)),
        ("Period end (exclusive)", moment(period.end)),
    )


def _issue_facts(
    kind: str, number: str | None, issued_at: datetime | None, report_status: str, context: DocumentContext
) -> list[tuple[str, str]]:
    if number is None:
        unnumbered = "none yet: a draft awaiting approval" if report_status == "draft" else "none"
        return [(f"{kind} number", unnumbered)]
    facts = [(f"{kind} number", number)]
    if issued_at is not None:
        facts.append(("Issue date", day(issued_at, context.zone, context.locale)))
    return facts


def _banner(report_status: str, number: str | None, cancelled: bool) -> str | None:
    if report_status == "draft":
        return "DRAFT"
    if number is not None and number.startswith(PREVIEW_PREFIX):
        return "PREVIEW"
    return "CANCELLED" if cancelled else None


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


def _invoice_view(document: InvoiceDocument, context: DocumentContext) -> DocumentView:
    invoice = document.invoice
    facts = _issue_facts("Invoice", invoice.number, invoice.issued_at, document.report_status, context)
    if invoice.due_at is not None:
        facts.append(("Due date", day(invoice.due_at, context.zone, context.locale)))
    facts += [
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
        notices.append(_correction_notice(document, invoice.supersedes, context))
    if document.credited_by is not None:
        facts.append(("Cancelled by credit note", str(document.credited_by.credit_note_id)))
        if document.corrected_by is not None:
            facts.append(("Corrected by invoice", str(document.corrected_by.invoice_id)))
        if document.owed_now is not None:
            facts.append(("Owed now: invoice", _named(document.owed_now)))
        notices.append(_cancelled_notice(document, document.credited_by, context))
    return DocumentView(
        heading="Invoice" if invoice.number is None else f"Invoice {invoice.number}",
        document_id=str(invoice.invoice_id),
        banner=_banner(document.report_status, invoice.number, document.credited_by is not None),
        seller=() if context.seller is None else context.seller.lines(),
        buyer=_buyer(invoice.account_id, context),
        facts=tuple(facts),
        notices=tuple(notices),
        rows=_rows(invoice.lines),
        subtotal=money(invoice.subtotal, invoice.currency, context.locale),
        total=money(invoice.total, invoice.currency, context.locale),
        total_label="Total",
        currency=invoice.currency,
        account_id=invoice.account_id,
        period_id=invoice.period.period_id,
        dated=invoice.issued_at or invoice.period.end,
    )


def _buyer(account_id: str, context: DocumentContext) -> tuple[str, ...]:
    if context.buyer is None:
        return (f"Account {account_id}",)
    return (*context.buyer.lines(), f"Account {account_id}")


def _named(invoice: InvoiceIssued) -> str:
    """An invoice by its number when it has one, with its id."""
    return str(invoice.invoice_id) if invoice.number is None else f"{invoice.number} ({invoice.invoice_id})"


def _correction_notice(document: InvoiceDocument, superseded: UUID, context: DocumentContext) -> str:
    invoice, corrects, credit_note = document.invoice, document.corrects, document.credit_note
    text = f"This invoice corrects invoice {superseded if corrects is None else _named(corrects)}"
    if corrects is not None:
        total = money(corrects.total, corrects.currency, context.locale)
        text += f" (revision {corrects.revision}, total {total})"
    if credit_note is not None:
        text += (
            f", which credit note {credit_note.number or credit_note.credit_note_id} cancelled in full "
            f"(credited {money(credit_note.total, credit_note.currency, context.locale)})"
        )
    else:
        text += "; the credit note that cancelled it is not in the store"
    return (
        f"{text}. After the credit note, the account owes what this invoice says: "
        f"{money(invoice.total, invoice.currency, context.locale)}."
    )


def _cancelled_notice(
    document: InvoiceDocument, credited_by: CreditNoteIssued, context: DocumentContext
) -> str:
    text = (
        f"Cancelled by credit note {credited_by.number or credited_by.credit_note_id} (revision "
        f"{credited_by.revision}, credited {money(credited_by.total, credited_by.currency, context.locale)})"
    )
    corrected_by, owed = document.corrected_by, document.owed_now
    if corrected_by is None:
        return f"{text}; the invoice that corrects it is not in the store. This invoice is no longer owed."
    text += (
        f", corrected by invoice {_named(corrected_by)} "
        f"(total {money(corrected_by.total, corrected_by.currency, context.locale)}). "
        "This invoice is no longer owed"
    )
    if owed is None:
        return f"{text}, and neither is its correction, which was cancelled in turn."
    owed_total = money(owed.total, owed.currency, context.locale)
    if owed.invoice_id == corrected_by.invoice_id:
        return f"{text}; the corrected invoice is."
    return (
        f"{text}; that correction was corrected in turn: the invoice owed now is {_named(owed)} "
        f"(revision {owed.revision}, total {owed_total})."
    )


def _credit_note_view(document: CreditNoteDocument, context: DocumentContext) -> DocumentView:
    note = document.credit_note
    facts = _issue_facts("Credit note", note.number, note.issued_at, document.report_status, context)
    facts += [
        ("Account", note.account_id),
        ("Credit note", str(note.credit_note_id)),
        (
            "Credits invoice",
            str(note.credits) if note.credits_number is None else f"{note.credits_number} ({note.credits})",
        ),
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
        total = money(credited.total, credited.currency, context.locale)
        text += f" (revision {credited.revision}, total {total})"
    else:
        text += " (that invoice is not in the store)"
    if correction is not None:
        text += (
            f"; invoice {correction.invoice_id} (revision {correction.revision}, "
            f"total {money(correction.total, correction.currency, context.locale)}) corrects it"
        )
    return DocumentView(
        heading="Credit note" if note.number is None else f"Credit note {note.number}",
        document_id=str(note.credit_note_id),
        banner=_banner(document.report_status, note.number, False),
        seller=() if context.seller is None else context.seller.lines(),
        buyer=_buyer(note.account_id, context),
        facts=tuple(facts),
        notices=(f"{text}. The lines below are the cancelled invoice's lines.",),
        rows=_rows(note.lines),
        subtotal=money(note.subtotal, note.currency, context.locale),
        total=money(note.total, note.currency, context.locale),
        total_label="Total credited",
        currency=note.currency,
        account_id=note.account_id,
        period_id=note.period.period_id,
        dated=note.issued_at or note.period.end,
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
