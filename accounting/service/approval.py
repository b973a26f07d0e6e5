"""Approving or rejecting a period's draft: what ``reckon reports approve|reject`` and the
coordinator's ``auto_approve_after`` rule do.

A draft is a priced report that waits (``approval = "manual"``): stored whole, reconcilable,
rendered as DRAFT, nothing numbered or published. Approving it numbers and dates its documents and
releases them to the relay; rejecting it aborts the report with the reviewer's reason, so a replay
can build the period again. Both are recorded with who decided and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import Numbering
from accounting.core.report import ReportKey, aborted
from accounting.infra.traces import report_context
from accounting.service.queries import find_report
from accounting.store.repository import DraftNotFound, Issued, ReportRecord, ReportStore
from contracts import AbortCode, AbortReason

log = logging.getLogger("reckon.approval")

AUTO_APPROVER = "auto_approve_after"
"""Who approved a draft that waited out the configured grace window."""


class CannotDecide(Exception):
    """There is no draft to decide on; the message says what the period has instead."""


@dataclass(frozen=True)
class Approved:
    record: ReportRecord
    issued: Issued


async def find_draft(store: ReportStore, period_id: str, revision: int | None = None) -> ReportRecord:
    """The period's draft (its newest revision, or ``revision``), or ``CannotDecide``."""
    record = await (store.latest(period_id) if revision is None else find_report(store, period_id, revision))
    which = f"period {period_id}" + ("" if revision is None else f" revision {revision}")
    if record is None:
        raise CannotDecide(f"{which} has no report")
    if record.status is not ReportStatus.DRAFT:
        raise CannotDecide(
            f"{which}: revision {record.revision} is {record.status.value}, not a draft awaiting approval"
        )
    return record


async def approve(
    store: ReportStore,
    period_id: str,
    *,
    by: str,
    numbering: Numbering,
    at: datetime,
    revision: int | None = None,
    reason: str = "",
) -> Approved:
    record = await find_draft(store, period_id, revision)
    try:
        issued = await store.approve(record.report_id, by, at, numbering, reason)
    except DraftNotFound as error:
        raise CannotDecide(str(error)) from None
    with report_context(record.report_id, period_id=period_id):
        log.info(
            "report %s period %s approved by %s: %d invoices, %d credit notes numbered %s",
            record.report_id,
            period_id,
            by,
            issued.invoices,
            issued.credit_notes,
            ", ".join(f"{first}…{last}" for first, last in issued.ranges) or "(none)",
        )
    return Approved(record, issued)


async def reject(
    store: ReportStore, period_id: str, *, by: str, reason: str, at: datetime, revision: int | None = None
) -> ReportRecord:
    if not reason.strip():
        raise CannotDecide("a rejection needs a reason (--reason): it is stored and sent with ReportAborted")
    record = await find_draft(store, period_id, revision)
    key = ReportKey(record.report_id, record.revision, record.period)
    message = f"rejected by {by}: {reason.strip()}"[:2000]
    outcome = aborted(key, [AbortReason(code=AbortCode.REJECTED, message=message)])
    try:
        await store.reject(record.report_id, by, at, reason.strip(), outcome.report)
    except DraftNotFound as error:
        raise CannotDecide(str(error)) from None
    with report_context(record.report_id, period_id=period_id):
        log.warning("report %s period %s → aborted: %s", record.report_id, period_id, message)
    return record


async def approve_overdue(
    store: ReportStore, numbering: Numbering, after: timedelta, now: datetime
) -> list[Approved]:
    """Approve every draft that has waited longer than ``after`` (``auto_approve_after``)."""
    approved: list[Approved] = []
    for report_id in await store.drafts(drafted_before=now - after):
        record = await store.get(report_id)
        if record is None:
            continue
        try:
            issued = await store.approve(
                report_id, AUTO_APPROVER, now, numbering, f"no decision within {after.total_seconds():g} s"
            )
        except DraftNotFound:
            continue  # decided by a reviewer meanwhile
        with report_context(report_id, period_id=record.period.period_id):
            log.info(
                "report %s period %s approved automatically after %s",
                report_id,
                record.period.period_id,
                after,
            )
        approved.append(Approved(record, issued))
    return approved
