"""The outbox as the relay sees it: claim a window of rows, mark them sent after their confirms."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import ColumnElement, Row, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema
from accounting.store.reports import transition
from contracts import ROUTING_REPORT_COMPLETED


@dataclass(frozen=True)
class OutboxRow:
    id: int
    report_id: UUID
    message_id: str
    exchange: str
    routing_key: str
    message_type: str
    mandatory: bool
    body: bytes
    attempts: int
    final: bool = False
    """The report's own event: relayed only after every other row of its report."""
    claim: str | None = field(default=None, compare=False)
    """The token of the relay claim this row was handed out under (not part of the row's identity)."""
    ready_at: datetime | None = field(default=None, compare=False)
    """When the row was made ready for the relay (its ``created_at`` for a row written without
    ``ready_at``, before 0007): where its relay lag starts."""


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    sent: int


@dataclass(frozen=True)
class OutboxStatus:
    """What ``reckon outbox`` shows: the backlog, its age, and why the last attempt failed."""

    pending: int
    sent: int
    staged: int
    """Invoices of reports still being priced: not relayed until their report is complete."""
    oldest_pending_at: datetime | None
    """When the oldest ready, unsent row was made ready (``ready_at``, else ``created_at``): a draft
    approved days after it was priced has waited for the relay since its approval, not its pricing."""
    last_error: str | None
    last_error_message_id: str | None


class OutboxRepository:
    engine: AsyncEngine

    async def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Unsent rows ready to relay, oldest first (claimed or not)."""
        table = schema.outbox
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    _with_body()
                    .where(table.c.sent_at.is_(None), table.c.ready.is_(True))
                    .order_by(table.c.id)
                    .limit(limit)
                )
            ).all()
        return [_outbox_row(row, ready_at=True) for row in rows]

    async def claim_window(self, now: datetime, until: datetime, limit: int = 500) -> list[OutboxRow]:
        """Claim up to ``limit`` of the oldest unsent rows nobody else holds, in write order.

        A report's own event (``final``) is only handed out once every earlier row of its report
        is sent, so ``ReportCompleted`` always follows the report's invoices, whichever relay sends
        them. A claim that outlives ``until`` (its relay died) may be taken by another relay.
        """
        table = schema.outbox
        earlier = table.alias("earlier")
        free = and_(
            table.c.sent_at.is_(None),
            table.c.ready.is_(True),
            or_(table.c.claimed_until.is_(None), table.c.claimed_until < now),
        )
        earlier_unsent = (
            exists()
            .where(earlier.c.report_id == table.c.report_id, earlier.c.sent_at.is_(None))
            .where(earlier.c.id < table.c.id)
        )
        # MATERIALIZED: as a plain ``IN (subquery)`` PostgreSQL may rescan the subquery for each
        # row it updates, and each rescan skips the rows this statement already locked and takes
        # the next ones, so the LIMIT bounded nothing (the whole backlog was claimed at once).
        eligible = (
            select(table.c.id)
            .where(free, or_(table.c.final.is_(False), ~earlier_unsent))
            .order_by(table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("eligible")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        token = str(uuid4())
        async with self.engine.begin() as connection:
            claimed = await connection.execute(
                update(table)
                .where(table.c.id.in_(select(eligible.c.id)), free)
                .values(claim=token, claimed_until=until)
            )
            if claimed.rowcount == 0:
                return []
            rows = (
                await connection.execute(
                    _with_body(ready_at=False).where(table.c.claim == token).order_by(table.c.id)
                )
            ).all()
        return [_outbox_row(row, ready_at=False) for row in rows]

    async def ready_since(self, report_ids: Collection[UUID]) -> dict[UUID, datetime]:
        """When each report's rows were made ready (the earliest, ``ready_at`` else ``created_at``):
        where the relay's lag starts. One query per report the relay meets, not a column per row."""
        if not report_ids:
            return {}
        table = schema.outbox
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table.c.report_id, func.min(_ready_since()))
                    .where(table.c.report_id.in_([str(report_id) for report_id in report_ids]), table.c.ready)
                    .group_by(table.c.report_id)
                )
            ).all()
        return {UUID(report_id): ready for report_id, since in rows if (ready := _utc(since)) is not None}

    async def mark_sent(self, rows: Sequence[OutboxRow], at: datetime) -> list[UUID]:
        """Mark rows sent after their confirms, in one statement; a report whose final event is
        among them moves to COMPLETED in the same transaction. Returns those reports."""
        if not rows:
            return []
        table = schema.outbox
        completed: list[UUID] = []
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]), table.c.sent_at.is_(None))
                .values(
                    sent_at=at, attempts=table.c.attempts + 1, last_error=None, claim=None, claimed_until=None
                )
            )
            for row in rows:
                if not row.final or row.routing_key != ROUTING_REPORT_COMPLETED:
                    continue
                status = (
                    await connection.execute(
                        select(schema.reports.c.status).where(
                            schema.reports.c.report_id == str(row.report_id)
                        )
                    )
                ).scalar_one()
                if status == ReportStatus.PUBLISHING:
                    await transition(
                        connection,
                        row.report_id,
                        ReportStatus.COMPLETED,
                        at,
                        "every invoice and the report event confirmed",
                    )
                    completed.append(row.report_id)
        return completed

    async def mark_failed(
        self, rows: Iterable[OutboxRow], error: str, retry_at: datetime | None = None
    ) -> None:
        """Keep the rows unsent and note why; hand them back at once, or only from ``retry_at`` on
        (a row nothing routes must not hold up the rows behind it on every claim)."""
        table = schema.outbox
        await self._update_held_rows(
            rows, attempts=table.c.attempts + 1, last_error=error[:2000], claim=None, claimed_until=retry_at
        )

    async def extend_claim(self, claim: str, until: datetime) -> None:
        """Keep holding a claim's unsent rows a while longer."""
        table = schema.outbox
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.claim == claim, table.c.sent_at.is_(None))
                .values(claimed_until=until)
            )

    async def release_claims(self, rows: Iterable[OutboxRow]) -> None:
        """Hand unsent rows back at once (the relay lost its broker) instead of at claim expiry."""
        await self._update_held_rows(rows, claim=None, claimed_until=None)

    async def _update_held_rows(self, rows: Iterable[OutboxRow], **values: Any) -> None:
        """Set ``values`` on those of ``rows`` still unsent and held by the claim that took them."""
        rows = list(rows)
        if not rows:
            return
        async with self.engine.begin() as connection:
            await connection.execute(update(schema.outbox).where(_still_held(rows)).values(**values))

    async def outbox_counts(self) -> OutboxCounts:
        status = await self.outbox_status()
        return OutboxCounts(pending=status.pending, sent=status.sent)

    async def outbox_status(self) -> OutboxStatus:
        table = schema.outbox
        unsent = table.c.sent_at.is_(None)
        async with self.engine.connect() as connection:
            pending, oldest = (
                await connection.execute(
                    select(func.count(), func.min(_ready_since())).where(unsent, table.c.ready.is_(True))
                )
            ).one()
            staged = (
                await connection.execute(select(func.count()).where(unsent, table.c.ready.is_(False)))
            ).scalar_one()
            sent = (
                await connection.execute(select(func.count()).where(table.c.sent_at.is_not(None)))
            ).scalar_one()
            failed = (
                await connection.execute(
                    select(table.c.message_id, table.c.last_error)
                    .where(unsent, table.c.last_error.is_not(None))
                    .order_by(table.c.id.desc())
                    .limit(1)
                )
            ).one_or_none()
        return OutboxStatus(
            pending=int(pending),
            sent=int(sent),
            staged=int(staged),
            oldest_pending_at=oldest,
            last_error=None if failed is None else failed.last_error,
            last_error_message_id=None if failed is None else failed.message_id,
        )


def _still_held(rows: Sequence[OutboxRow]) -> Any:
    """Rows still unsent and still under the claim they were handed out with: once a claim expired
    and another relay took the rows, this relay must not hand them back from under it."""
    table = schema.outbox
    claims = {row.claim for row in rows}
    held: ColumnElement[bool] = table.c.claim.in_([claim for claim in claims if claim is not None])
    if None in claims:
        held = or_(held, table.c.claim.is_(None))
    return and_(table.c.id.in_([row.id for row in rows]), table.c.sent_at.is_(None), held)


def _ready_since() -> Any:
    """When a row was made ready: ``ready_at``, or ``created_at`` for a row written without one
    (before 0007, or by the release before it, which knows no ``ready_at``)."""
    table = schema.outbox
    return func.coalesce(table.c.ready_at, table.c.created_at)


def _with_body(*, ready_at: bool = True) -> Any:
    """Outbox columns with the body to publish: an invoice's lives in ``invoices`` and a credit
    note's in ``credit_notes``, once."""
    table, invoices, notes = schema.outbox, schema.invoices, schema.credit_notes
    return select(
        table.c.id,
        table.c.report_id,
        table.c.message_id,
        table.c.exchange,
        table.c.routing_key,
        table.c.message_type,
        table.c.mandatory,
        func.coalesce(table.c.body, invoices.c.body, notes.c.body).label("body"),
        table.c.attempts,
        table.c.final,
        table.c.claim,
        *([_ready_since().label("ready_at")] if ready_at else []),
    ).select_from(
        table.outerjoin(invoices, invoices.c.invoice_id == table.c.message_id).outerjoin(
            notes, notes.c.credit_note_id == table.c.message_id
        )
    )


def _outbox_row(row: Row[Any], *, ready_at: bool) -> OutboxRow:
    """A row of ``_with_body(ready_at=ready_at)``."""
    return OutboxRow(
        id=row.id,
        report_id=UUID(row.report_id),
        message_id=row.message_id,
        exchange=row.exchange,
        routing_key=row.routing_key,
        message_type=row.message_type,
        mandatory=row.mandatory,
        body=row.body.encode(),
        attempts=row.attempts,
        final=row.final,
        claim=row.claim,
        ready_at=_utc(row.ready_at) if ready_at else None,
    )


def _utc(value: datetime | None) -> datetime | None:
    """An aware UTC time (a driver may hand back a naive one for an expression's result)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
