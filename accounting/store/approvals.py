"""Drafts and their decisions: a priced report that waits for a reviewer is approved (numbered,
dated and released to the relay) or rejected (its documents dropped, ReportAborted queued), each
decision stored with who made it and when."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import Numbering
from accounting.store import schema
from accounting.store.engine import refresh_statistics
from accounting.store.invoices import drop_staged, enqueue
from accounting.store.issuing import Approval, Issued, issue_documents, record_approval
from accounting.store.reports import report_record, transition
from contracts import ROUTING_REPORT_ABORTED, ReportAborted


class DraftNotFound(LookupError):
    """No report awaits approval under that id (it was decided meanwhile, or never was a draft)."""


class ApprovalsRepository:
    engine: AsyncEngine

    async def approvals(self, report_id: UUID) -> list[Approval]:
        """Every decision on the report, oldest first."""
        table = schema.approvals
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.report_id == str(report_id)).order_by(table.c.id)
                )
            ).all()
        return [
            Approval(UUID(row.report_id), row.decision, row.decided_by, row.decided_at, row.reason)
            for row in rows
        ]

    async def drafts(self, drafted_before: datetime | None = None) -> list[UUID]:
        """Reports awaiting approval (drafted before ``drafted_before``, when given), oldest first."""
        reports = schema.reports
        query = (
            select(reports.c.report_id)
            .where(reports.c.status == ReportStatus.DRAFT.value)
            .order_by(reports.c.updated_at)
        )
        if drafted_before is not None:
            query = query.where(reports.c.updated_at < drafted_before)
        async with self.engine.connect() as connection:
            return [UUID(row.report_id) for row in (await connection.execute(query)).all()]

    async def approve(
        self, report_id: UUID, decided_by: str, at: datetime, numbering: Numbering, reason: str = ""
    ) -> Issued:
        """DRAFT → PUBLISHING: number and date its documents and let the relay send them.
        ``DraftNotFound`` when the report is not (or no longer) a draft."""
        async with self.engine.begin() as connection:
            await _take_draft(connection, report_id)
            issued = await issue_documents(connection, report_id, numbering, at)
            await record_approval(connection, Approval(report_id, "approved", decided_by, at, reason))
            why = f"approved by {decided_by}" + (f": {reason}" if reason else "")
            await transition(connection, report_id, ReportStatus.PUBLISHING, at, why)
        await refresh_statistics(self.engine, schema.outbox, schema.invoices)
        return issued

    async def reject(
        self, report_id: UUID, decided_by: str, at: datetime, reason: str, aborted: ReportAborted
    ) -> None:
        """DRAFT → ABORTED: its documents are dropped unnumbered and ``aborted`` (whose reason is
        the rejection) is queued; a replay builds the period again."""
        async with self.engine.begin() as connection:
            await _take_draft(connection, report_id)
            await drop_staged(connection, report_id)
            await enqueue(connection, report_id, ROUTING_REPORT_ABORTED, aborted, at)
            await record_approval(connection, Approval(report_id, "rejected", decided_by, at, reason))
            await transition(
                connection, report_id, ReportStatus.ABORTED, at, f"rejected by {decided_by}: {reason}"
            )


async def _take_draft(connection: AsyncConnection, report_id: UUID) -> None:
    """Lock the draft's row for this transaction (an UPDATE), or ``DraftNotFound``."""
    reports = schema.reports
    taken = await connection.execute(
        update(reports)
        .where(reports.c.report_id == str(report_id), reports.c.status == ReportStatus.DRAFT.value)
        .values(report_id=reports.c.report_id)
    )
    if taken.rowcount != 1:
        row = (
            await connection.execute(select(reports).where(reports.c.report_id == str(report_id)))
        ).one_or_none()
        status = "there is no such report" if row is None else f"it is {report_record(row).status.value}"
        raise DraftNotFound(f"report {report_id} does not await approval: {status}")
