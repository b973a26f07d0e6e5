"""Reconciling a completed report: its stored records and invoices, read a page of accounts at a time.

The shell of ``accounting/core/reconcile.py``: it finds the report, takes the rate card stored with
it (the card that priced it, not today's), reads the gather's records in account order a page at a
time (whole accounts, as the pricer reads them) with the stored invoices of the same accounts, and
yields one ``AccountTrace`` per account. Memory holds one page, however many accounts the report
has; ``--account`` reads that account alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from pydantic import ValidationError

from accounting.core.billing import converter_for
from accounting.core.lifecycle import ReportStatus
from accounting.core.normalizer import Converter
from accounting.core.rate_card import RateCard
from accounting.core.reconcile import AccountTrace, UsageRow, trace_account
from accounting.core.reconcile_totals import Totals, TotalsBuilder
from accounting.core.report import ReportKey
from accounting.service.queries import find_report
from accounting.store.repository import ReportRecord, ReportStore
from contracts import InvoiceIssued

PAGE_RECORDS = 20_000
"""Records read per page (the pricer's window): a query amortised, memory flat."""

ISSUED = (ReportStatus.PUBLISHING, ReportStatus.COMPLETED)
RECONCILABLE = (*ISSUED, ReportStatus.DRAFT)


class CannotReconcile(Exception):
    """There is nothing to reconcile: no such report, not completed, no stored card or records."""


@dataclass(frozen=True)
class Target:
    """A completed report with what pricing it took: the stored card, its converter, its gather."""

    record: ReportRecord
    card: RateCard
    converter: Converter
    gather_id: int

    @property
    def draft(self) -> bool:
        """A draft awaiting approval: its documents are read as if issued."""
        return self.record.status is ReportStatus.DRAFT

    @property
    def report_total(self) -> Decimal:
        assert self.record.total is not None  # checked by ``find_target``
        return self.record.total


async def find_target(store: ReportStore, period_id: str, revision: int | None = None) -> Target:
    """The report to reconcile: ``revision`` of the period, else its draft awaiting approval, else
    its newest completed revision."""
    if revision is None:
        latest = await store.latest(period_id)
        draft = latest if latest is not None and latest.status is ReportStatus.DRAFT else None
        record = draft or await store.latest_completed(period_id)
        if record is None:
            latest = await store.latest(period_id)
            if latest is None:
                raise CannotReconcile(f"no report for period {period_id}")
            raise CannotReconcile(
                f"period {period_id} has no completed report "
                f"(its newest, revision {latest.revision}, is {latest.status.value})"
            )
    else:
        found = await find_report(store, period_id, revision)
        if found is None:
            raise CannotReconcile(f"no report for period {period_id} revision {revision}")
        record = found
    name = f"report {period_id} revision {record.revision}"
    if record.status not in RECONCILABLE:
        raise CannotReconcile(f"{name} is {record.status.value}: it issued no invoices to reconcile")
    if record.rate_card is None or record.total is None:
        raise CannotReconcile(f"{name} has no stored rate card or total (priced before they were kept)")
    try:
        card = RateCard.model_validate(record.rate_card)
    except ValidationError as error:
        raise CannotReconcile(f"{name}: its stored rate card no longer reads: {error}") from None
    gather_id = await store.gather_of(record.report_id)
    if gather_id is None:
        raise CannotReconcile(f"{name} has no stored records (no gather)")
    key = ReportKey(report_id=record.report_id, revision=record.revision, period=record.period)
    return Target(record=record, card=card, converter=converter_for(key, card), gather_id=gather_id)


async def account_traces(
    store: ReportStore, target: Target, *, account: str | None = None, page_records: int = PAGE_RECORDS
) -> AsyncIterator[AccountTrace]:
    """Every account of the report in account order (or only ``account``): each account that has
    records or a stored invoice, traced and checked against its invoice."""
    if account is not None:
        rows = await store.usage_of_account(target.gather_id, account)
        invoices = await _current(store, target, account_id=account)
        if not rows and not invoices:
            raise CannotReconcile(
                f"account {account} has neither records nor an invoice in report "
                f"{target.record.period.period_id} revision {target.record.revision}"
            )
        yield _trace(target, account, rows, invoices.get(account))
        return
    after = ""
    while True:
        rows, upto = await store.usage_window(target.gather_id, after, page_records)
        invoices = await _current(store, target, after=after, upto=upto)
        by_account: dict[str, list[UsageRow]] = {}
        for row in rows:
            by_account.setdefault(row[0], []).append(row)
        for name in sorted(by_account.keys() | invoices.keys()):
            yield _trace(target, name, by_account.get(name, ()), invoices.get(name))
        if upto is None:
            return
        after = upto


async def _current(store: ReportStore, target: Target, **accounts: str | None) -> dict[str, InvoiceIssued]:
    """Each account's current invoice as of the reconciled revision: a correction issues only what
    changed, so the invoice an account owes may be of an earlier revision."""
    record = target.record
    return await store.current_invoices(
        record.period.period_id, record.revision + 1, drafts=target.draft, **accounts
    )


async def reconcile(store: ReportStore, target: Target, *, account: str | None = None) -> Totals:
    """The totals of the whole report (or one account), checked; the traces are not kept."""
    builder = TotalsBuilder(target.card.currency, revision=target.record.revision)
    async for trace in account_traces(store, target, account=account):
        builder.add(trace)
    return builder.finish(None if account is not None else target.report_total)


def _trace(
    target: Target, account: str, rows: list[UsageRow] | tuple[()], invoice: InvoiceIssued | None
) -> AccountTrace:
    return trace_account(account, rows, converter=target.converter, card=target.card, stored=invoice)
