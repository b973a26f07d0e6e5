"""Numbers and dates of issued documents: the invoice and credit-note series, payment terms, and
the stamp an approved draft's bodies get.

A report is priced into **draft** bodies, without number or dates; issuing it (its approval,
automatic or by a reviewer) stamps each body in account order with the next number of its series
and the issue and due dates, in the transaction that makes it visible to the relay. So aborted
reports, rejected drafts and previews consume no number, and a number is never given twice.

A series is its rendered prefix: ``INV-{year}-`` gives ``INV-2026-000123`` and starts again at 1
each year (the year of issue, in the billing calendar's time zone).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from pydantic import TypeAdapter

from contracts import UtcDatetime

DocumentKind = Literal["invoice", "credit_note"]

DRAFT_INVOICE_FIELDS = {"number", "issued_at", "due_at"}
"""What a draft invoice body leaves out: issuing appends them, in this (the model's) order."""
DRAFT_CREDIT_NOTE_FIELDS = {"number", "issued_at"}

PREVIEW_PREFIX = "PREVIEW-"
"""Every number of a preview starts with it, and no configured prefix may: a preview's number can
never be an issued document's."""

_PREFIX_FIELDS = {"year"}
_PREFIX_TEXT = re.compile(r"^[A-Za-z0-9/_.-]*$")
_datetime_json = TypeAdapter(UtcDatetime)


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot name a series, or None. Letters, digits and ``- / _ .`` around an
    optional ``{year}``; not the preview prefix; short enough for a 40-character number."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(prefix) if name is not None}
    except ValueError as error:
        return f"{prefix!r} is not a valid template: {error}"
    unknown = fields - _PREFIX_FIELDS
    if unknown:
        return f"{prefix!r} uses {', '.join(sorted(unknown))}: only {{year}} may appear"
    rendered = prefix.format(year=2026)
    if not _PREFIX_TEXT.match(rendered):
        return f"{prefix!r} may hold only letters, digits and - / _ . besides {{year}}"
    if rendered.upper().startswith(PREVIEW_PREFIX):
        return f"{prefix!r} starts with {PREVIEW_PREFIX!r}, which marks previews"
    if len(rendered) > 24:
        return f"{prefix!r} is longer than 24 characters once rendered"
    return None


@dataclass(frozen=True)
class Numbering:
    """How issued documents are numbered and dated (the seller's configuration)."""

    invoice_prefix: str = "INV-{year}-"
    credit_note_prefix: str = "CN-{year}-"
    digits: int = 6
    payment_terms: timedelta = timedelta(days=30)
    zone: tzinfo = UTC
    """The time zone whose calendar year a series belongs to (the billing calendar's)."""
    preview: bool = False

    def for_preview(self) -> Numbering:
        return replace(self, preview=True)

    def series(self, kind: DocumentKind, issued_at: datetime) -> str:
        """The series a document issued at ``issued_at`` is numbered in (its rendered prefix)."""
        template = self.invoice_prefix if kind == "invoice" else self.credit_note_prefix
        prefix = template.format(year=issued_at.astimezone(self.zone).year)
        return PREVIEW_PREFIX + prefix if self.preview else prefix

    def number(self, series: str, sequence: int) -> str:
        """The ``sequence``-th number of ``series`` (from 1), zero-padded to ``digits``."""
        if sequence < 1:
            raise ValueError(f"series {series}: numbers start at 1, not {sequence}")
        return f"{series}{sequence:0{self.digits}d}"

    def stamp(self, issued_at: datetime) -> IssueStamp:
        return IssueStamp(issued_at=issued_at, due_at=issued_at + self.payment_terms)


DEFAULT_NUMBERING = Numbering()


@dataclass(frozen=True)
class IssueStamp:
    """The dates every document of one approval gets."""

    issued_at: datetime
    due_at: datetime

    def invoice_body(self, draft: str, number: str) -> str:
        """The issued body of a draft invoice body: the same JSON with number and dates appended
        (exactly what the model would write: the fields are its last ones)."""
        return _append(draft, number=number, issued_at=self.issued_at, due_at=self.due_at)

    def credit_note_body(self, draft: str, number: str) -> str:
        return _append(draft, number=number, issued_at=self.issued_at)


def _append(draft: str, **fields: str | datetime) -> str:
    if not draft.endswith("}") or '"number":' in draft:
        raise ValueError("not a draft body: it is not a JSON object without a number")
    tail = ",".join(
        f'"{name}":'
        + (_datetime_json.dump_json(value).decode() if isinstance(value, datetime) else json.dumps(value))
        for name, value in fields.items()
    )
    return f"{draft[:-1]},{tail}}}"
