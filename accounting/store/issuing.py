"""Issuing a priced report: numbers, dates and approval, in the transaction that makes its
invoices visible to the relay.

A report's invoices and credit notes are staged as draft bodies while it is priced. Issuing stamps
each with the next number of its series (in account order) and the issue and due dates, marks the
report's outbox rows ready, records who approved it, and moves it to PUBLISHING — all or nothing.
The series' counter row is raised in that same transaction, so a rolled-back issue gives its
numbers back (no gap) and two coordinators issuing at once queue on the row (no number twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from accounting.core.numbering import DocumentKind, Numbering
from accounting.store import schema

STAMP_PAGE = 2_000
"""Documents read, stamped and written back per statement while issuing (memory stays flat)."""

Decision = Literal["approved", "rejected"]


@dataclass(frozen=True)
class Approval:
    """One decision on a priced report."""

    report_id: UUID
    decision: Decision
    decided_by: str
    decided_at: datetime
    reason: str = ""


@dataclass(frozen=True)
class Issued:
    """What one issue numbered: how many documents, and each series' first and last number."""

    invoices: int
    credit_notes: int
    ranges: tuple[tuple[str, str], ...]
    """``(first, last)`` number of each series used, invoices first."""


async def record_approval(connection: AsyncConnection, approval: Approval) -> None:
    await connection.execute(
        schema.approvals.insert().values(
            report_id=str(approval.report_id),
            decision=approval.decision,
            decided_by=approval.decided_by,
            decided_at=approval.decided_at,
            reason=approval.reason,
        )
    )


async def issue_documents(
    connection: AsyncConnection, report_id: UUID, numbering: Numbering, at: datetime
) -> Issued:
    """Stamp the report's staged invoices and credit notes with numbers and dates and make its
    outbox rows ready (``ready_at``: now, where relay lag starts); the caller moves the report to
    PUBLISHING in the same transaction."""
    stamp = numbering.stamp(at)
    invoices = await _stamp(
        connection, schema.invoices, "invoice", report_id, numbering, at, stamp.invoice_body
    )
    notes = await _stamp(
        connection, schema.credit_notes, "credit_note", report_id, numbering, at, stamp.credit_note_body
    )
    outbox = schema.outbox
    await connection.execute(
        update(outbox)
        .where(outbox.c.report_id == str(report_id), outbox.c.ready.is_(False))
        .values(ready=True, ready_at=at)
    )
    return Issued(invoices[0], notes[0], tuple(span for _, span in (invoices, notes) if span is not None))


async def _stamp(
    connection: AsyncConnection,
    table: Table,
    kind: DocumentKind,
    report_id: UUID,
    numbering: Numbering,
    at: datetime,
    stamped: Callable[[str, str], str],
) -> tuple[int, tuple[str, str] | None]:
    key = table.c.invoice_id if kind == "invoice" else table.c.credit_note_id
    of_report = table.c.report_id == str(report_id)
    count = (await connection.execute(select(func.count()).select_from(table).where(of_report))).scalar_one()
    if count == 0:
        return 0, None
    series = numbering.series(kind, at)
    first = await _reserve(connection, series, count)
    write = (
        update(table)
        .where(key == bindparam("key"))
        .values(number=bindparam("new_number"), body=bindparam("new_body"))
    )
    sequence, after = first, ""
    while True:
        page = (
            await connection.execute(
                select(key.label("key"), table.c.account_id, table.c.body)
                .where(of_report, table.c.account_id > after)
                .order_by(table.c.account_id)
                .limit(STAMP_PAGE)
            )
        ).all()
        if not page:
            break
        values: list[dict[str, Any]] = []
        for row in page:
            number = numbering.number(series, sequence)
            values.append({"key": row.key, "new_number": number, "new_body": stamped(row.body, number)})
            sequence += 1
        await connection.execute(write, values)
        after = page[-1].account_id
    last = sequence - 1
    return count, (numbering.number(series, first), numbering.number(series, last))


async def _reserve(connection: AsyncConnection, series: str, count: int) -> int:
    """Raise ``series``' counter by ``count`` and return the first number reserved. The UPDATE
    holds the counter's row until this transaction ends: a concurrent issue waits for it."""
    table = schema.number_series
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    # A series' first use creates its row; one created by a concurrent issue is left as it is.
    await connection.execute(dialect_insert(table).values(series=series, last=0).on_conflict_do_nothing())
    await connection.execute(update(table).where(table.c.series == series).values(last=table.c.last + count))
    last = (await connection.execute(select(table.c.last).where(table.c.series == series))).scalar_one()
    return int(last) - count + 1
