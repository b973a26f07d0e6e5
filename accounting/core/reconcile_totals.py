"""Reconciliation totals: traced accounts added up exactly, per item and in all, and checked against
the report's total."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from accounting.core.exact import exact_add
from accounting.core.reconcile import AccountTrace, Problem

MAX_PROBLEMS = 100
"""Problems kept in full by ``TotalsBuilder``; beyond them only the count grows (bounded memory)."""


@dataclass(frozen=True)
class ItemTotal:
    """One item over every account: raw quantities per (service, unit), billable quantity, amount."""

    item: str
    description: str
    billable_unit: str
    accounts: int
    raw: tuple[tuple[str, str, Decimal], ...]
    """``(service, unit, exact sum of the records)``."""
    billable_quantity: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Totals:
    """The exact totals of a reconciliation and every problem found (the first ``MAX_PROBLEMS``)."""

    currency: str
    accounts: int
    records: int
    invoices: int
    items: tuple[ItemTotal, ...]
    total: Decimal
    """Exact sum of the traced invoice totals."""
    stored_total: Decimal
    """Exact sum of the stored invoices' totals."""
    report_total: Decimal | None
    """The report's total (``ReportCompleted.total``); None when only some accounts were traced."""
    problems: tuple[Problem, ...]
    problem_count: int

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


@dataclass
class _ItemSum:
    description: str
    unit: str
    accounts: int = 0
    billable: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    raw: dict[tuple[str, str], Decimal] = field(default_factory=dict)


class TotalsBuilder:
    """Adds traced accounts up exactly, per item and in all; memory grows with items, not accounts."""

    def __init__(self, currency: str, max_problems: int = MAX_PROBLEMS, revision: int | None = None) -> None:
        """``revision``: the one reconciled; only the invoices it issued add up to its report's
        total (None: every stored invoice counts)."""
        self._currency = currency
        self._max_problems = max_problems
        self._items: dict[str, _ItemSum] = {}
        self._accounts = 0
        self._records = 0
        self._invoices = 0
        self._total = Decimal(0)
        self._stored = Decimal(0)
        self._issued_here = Decimal(0)
        self._revision = revision
        self._problems: list[Problem] = []
        self._problem_count = 0

    def add(self, account: AccountTrace) -> None:
        self._accounts += 1
        self._records += account.records
        self._total = exact_add(self._total, account.total)
        if account.stored_total is not None:
            self._invoices += 1
            self._stored = exact_add(self._stored, account.stored_total)
            if self._revision is None or account.stored_revision == self._revision:
                self._issued_here = exact_add(self._issued_here, account.stored_total)
        for item in account.items:
            entry = self._items.setdefault(item.item, _ItemSum(item.description, item.billable_unit))
            entry.accounts += 1
            entry.billable = exact_add(entry.billable, item.billable_quantity)
            entry.amount = exact_add(entry.amount, item.amount)
            for source in item.sources:
                key = (source.service, source.unit)
                entry.raw[key] = exact_add(entry.raw.get(key, Decimal(0)), source.raw_quantity)
        self.note(account.problems)

    def note(self, problems: Iterable[Problem]) -> None:
        """Problems found beside the traces (the audit of the documents and raw replies)."""
        for problem in problems:
            self._problem_count += 1
            if len(self._problems) < self._max_problems:
                self._problems.append(problem)

    def finish(self, report_total: Decimal | None) -> Totals:
        """The totals; with ``report_total`` (a whole report) the traced grand total must equal
        what the accounts' current invoices add up to, and the invoices the reconciled revision
        issued must add up to its report's total, exactly; else a problem says so (listed first,
        whatever the limit). For a first revision both are the report's total."""
        report: list[Problem] = []
        if report_total is not None:
            checks = (
                ("traced total differs from the current invoices' total", self._total, self._stored),
                ("the invoices this revision issued do not add up to its report's total",
                 self._issued_here, report_total),
            )  # fmt: skip
            report = [
                Problem(None, None, None, what, str(value), str(expected))
                for what, value, expected in checks
                if value != expected
            ]
        items = tuple(
            ItemTotal(
                item=key,
                description=entry.description,
                billable_unit=entry.unit,
                accounts=entry.accounts,
                raw=tuple((service, unit, raw) for (service, unit), raw in sorted(entry.raw.items())),
                billable_quantity=entry.billable,
                amount=entry.amount,
            )
            for key, entry in sorted(self._items.items())
        )
        return Totals(
            currency=self._currency,
            accounts=self._accounts,
            records=self._records,
            invoices=self._invoices,
            items=items,
            total=self._total,
            stored_total=self._stored,
            report_total=report_total,
            problems=(*report, *self._problems),
            problem_count=len(report) + self._problem_count,
        )
