"""``reckon reports diff PERIOD``: a period's draft (or issued report) against the month before,
each account's current invoice on both sides, streamed from the store."""

from __future__ import annotations

from dataclasses import dataclass

from accounting.core.calendar import BillingCalendar
from accounting.core.diff import DiffBuilder, PeriodDiff
from accounting.core.lifecycle import ReportStatus
from accounting.service.queries import find_report
from accounting.store.repository import ReportRecord, ReportStore

EVERY_REVISION = 2**31 - 1


class NothingToDiff(Exception):
    """The period has no priced report to compare."""


@dataclass(frozen=True)
class DiffedPeriods:
    record: ReportRecord
    """The report compared: the period's draft, or its newest issued revision."""
    previous_period: str
    previous: ReportRecord | None
    """The previous period's newest issued report (None: it has none, every account is new)."""
    diff: PeriodDiff


async def diff_period(
    store: ReportStore, calendar: BillingCalendar, period_id: str, revision: int | None = None
) -> DiffedPeriods:
    record = await _priced(store, period_id, revision)
    previous_period = calendar.previous(calendar.period(period_id).start).period_id
    builder = DiffBuilder()
    draft = record.status is ReportStatus.DRAFT
    async for invoice in store.stream_current_invoices(period_id, record.revision + 1, drafts=draft):
        builder.add("now", invoice)
    async for invoice in store.stream_current_invoices(previous_period, EVERY_REVISION):
        builder.add("before", invoice)
    return DiffedPeriods(
        record, previous_period, await store.latest_completed(previous_period), builder.result()
    )


async def _priced(store: ReportStore, period_id: str, revision: int | None) -> ReportRecord:
    record = await find_report(store, period_id, revision)
    if revision is None and record is not None and record.status is not ReportStatus.DRAFT:
        record = await store.latest_completed(period_id) or record
    which = f"period {period_id}" + ("" if revision is None else f" revision {revision}")
    if record is None:
        raise NothingToDiff(f"{which} has no report")
    if record.status not in (ReportStatus.DRAFT, ReportStatus.PUBLISHING, ReportStatus.COMPLETED):
        raise NothingToDiff(
            f"{which}: revision {record.revision} is {record.status.value}; only a draft or an issued "
            "report has invoices to compare"
        )
    return record
