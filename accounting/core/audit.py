"""The audit of every cent that moved for one account: its invoices and credit notes as stored.

``reports reconcile`` traces a revision's records to its invoices (``reconcile``); this checks
what was sent around them, for every issued revision of the period:

- each stored document's body against its row (the columns the relay and the queries read);
- each invoice's period and rate-card fingerprint against its report's;
- each credit note against the invoice it credits (same account, currency and total), and the
  chain: an invoice a later one supersedes has exactly one credit note, nothing else has any;
- the balance: invoiced minus credited is what the account owes now, the total of its one invoice
  that nothing supersedes. A payment service that applied every document holds that balance.

Pure: the store gives the rows, one account at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from accounting.core.exact import exact_add, exact_sum
from accounting.core.reconcile import Problem
from contracts import CreditNoteIssued, InvoiceIssued, Period


@dataclass(frozen=True)
class InvoiceRow:
    """An ``invoices`` row: its columns and the body the relay publishes."""

    invoice_id: str
    report_id: str
    revision: int
    account_id: str
    currency: str
    total: str
    supersedes: str | None
    body: str


@dataclass(frozen=True)
class CreditNoteRow:
    credit_note_id: str
    report_id: str
    revision: int
    account_id: str
    credits: str
    currency: str
    total: str
    body: str


@dataclass(frozen=True)
class Revision:
    """What each invoice of an issued revision must carry: its report, period and card."""

    report_id: UUID
    period: Period
    rate_card: str


@dataclass(frozen=True)
class Balance:
    """One account's money in one currency: every invoice issued, every credit note, what it owes."""

    account_id: str
    currency: str
    invoiced: Decimal
    credited: Decimal

    @property
    def owed(self) -> Decimal:
        return self.invoiced - self.credited

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "currency": self.currency,
            "invoiced": str(self.invoiced),
            "credited": str(self.credited),
            "owed": str(self.owed),
        }


def audit_account(
    account_id: str,
    invoices: Sequence[InvoiceRow],
    credit_notes: Sequence[CreditNoteRow],
    revisions: Mapping[int, Revision],
) -> tuple[list[Balance], list[Problem]]:
    """The account's balances and every problem found in its documents (see the module)."""
    problems: list[Problem] = []

    def problem(what: str, traced: object = None, stored: object = None) -> None:
        problems.append(
            Problem(account_id, None, None, what, None if traced is None else str(traced), _text(stored))
        )

    issued: dict[UUID, InvoiceIssued] = {}
    for row in invoices:
        body = _parse(InvoiceIssued, row.body)
        if body is None:
            problem(f"invoice {row.invoice_id}: its stored body is not an InvoiceIssued")
            continue
        for what, column, in_body in _invoice_fields(row, body):
            if column != in_body:
                problem(f"invoice {row.invoice_id}: {what} of the row differs from the body", in_body, column)
        revision = revisions.get(row.revision)
        if revision is None:
            problem(f"invoice {row.invoice_id}: revision {row.revision} is not an issued revision")
        else:
            name = f"invoice {row.invoice_id}"
            if body.period != revision.period:
                reports = _span(revision.period)
                problem(f"{name}: period differs from its report's", reports, _span(body.period))
            if body.rate_card != revision.rate_card:
                problem(f"{name}: rate card differs from its report's", revision.rate_card, body.rate_card)
        issued[body.invoice_id] = body

    superseded_by = {body.supersedes: body for body in issued.values() if body.supersedes is not None}
    for old, new in superseded_by.items():
        if old not in issued:
            problem(f"invoice {new.invoice_id} supersedes {old}, which is not an invoice of this account")
    credited: dict[UUID, list[CreditNoteIssued]] = {}
    for note_row in credit_notes:
        note = _parse(CreditNoteIssued, note_row.body)
        if note is None:
            problem(f"credit note {note_row.credit_note_id}: its stored body is not a CreditNoteIssued")
            continue
        name = f"credit note {note.credit_note_id}"
        for what, column, in_body in _note_fields(note_row, note):
            if column != in_body:
                problem(f"{name}: {what} of the row differs from the body", in_body, column)
        credited.setdefault(note.credits, []).append(note)
        target = issued.get(note.credits)
        if target is None:
            problem(f"{name} credits {note.credits}, not an invoice of this account")
        elif (note.currency, note.total) != (target.currency, target.total):
            problem(
                f"credit note {note.credit_note_id} does not cancel invoice {target.invoice_id} exactly",
                f"{target.total} {target.currency}",
                f"{note.total} {note.currency}",
            )
    for invoice_id in sorted(issued, key=lambda key: issued[key].revision):
        notes = len(credited.get(invoice_id, ()))
        expected = 1 if invoice_id in superseded_by else 0
        if notes != expected:
            state = "superseded" if expected else "current"
            problem(f"invoice {invoice_id} ({state}) has {notes} credit note(s), not {expected}")

    current = [body for invoice_id, body in issued.items() if invoice_id not in superseded_by]
    balances = []
    for currency in sorted({body.currency for body in issued.values()}):
        invoiced = exact_sum(body.total for body in issued.values() if body.currency == currency)
        notes_total = Decimal(0)
        for notes_of in credited.values():
            for note in notes_of:
                if note.currency == currency:
                    notes_total = exact_add(notes_total, note.total)
        balance = Balance(account_id, currency, invoiced, notes_total)
        balances.append(balance)
        owed_now = exact_sum(body.total for body in current if body.currency == currency)
        if balance.owed != owed_now:
            what = f"invoiced minus credited in {currency} is not the current invoice's total"
            problem(what, owed_now, balance.owed)
    if len(current) > 1:
        problem(f"{len(current)} invoices are current (none supersedes the other)")
    return balances, problems


def _parse(kind: type[InvoiceIssued] | type[CreditNoteIssued], body: str) -> Any:
    try:
        return kind.model_validate_json(body)
    except ValidationError:
        return None


def _invoice_fields(row: InvoiceRow, body: InvoiceIssued) -> list[tuple[str, object, object]]:
    return [
        ("invoice_id", row.invoice_id, str(body.invoice_id)),
        ("report_id", row.report_id, str(body.report_id)),
        ("revision", row.revision, body.revision),
        ("account_id", row.account_id, body.account_id),
        ("currency", row.currency, body.currency),
        ("total", _decimal(row.total), body.total),
        ("supersedes", row.supersedes, None if body.supersedes is None else str(body.supersedes)),
    ]


def _note_fields(row: CreditNoteRow, note: CreditNoteIssued) -> list[tuple[str, object, object]]:
    return [
        ("credit_note_id", row.credit_note_id, str(note.credit_note_id)),
        ("report_id", row.report_id, str(note.report_id)),
        ("revision", row.revision, note.revision),
        ("account_id", row.account_id, note.account_id),
        ("credits", row.credits, str(note.credits)),
        ("currency", row.currency, note.currency),
        ("total", _decimal(row.total), note.total),
    ]


def _decimal(text: str) -> Decimal | str:
    try:
        return Decimal(text)
    except ArithmeticError:
        return text


def _span(period: Period) -> str:
    return f"{period.period_id} {period.start.isoformat()} → {period.end.isoformat()}"


def _text(value: object) -> str | None:
    return None if value is None else str(value)
