"""The documents a customer receives, as the store holds them: an invoice or a credit note with
the documents around it (what it corrects, what cancelled it, what is owed now)."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import CreditNoteIssued, InvoiceIssued


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
    owed_now: InvoiceIssued | None = None
    """When this invoice was cancelled: the invoice the account owes now for the period, found by
    following the corrections to the end of the chain (``corrected_by`` itself when that one was
    never cancelled in turn; None when the chain ends in a cancellation with no correction)."""

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
