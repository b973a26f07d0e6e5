"""The accounting store: reports, their history, raw replies, invoices and the outbox.

Every method is one transaction. Writes that must happen together (a report's invoices and
their outbox rows, say) are one method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Row, Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from accounting.core.lifecycle import IllegalTransition, ReportStatus, Transition, check_transition
from accounting.store import schema
from accounting.store.migrate import upgrade
from contracts import (
    ROUTING_INVOICE_ISSUED,
    ROUTING_REPORT_ABORTED,
    ROUTING_REPORT_COMPLETED,
    InvoiceIssued,
    Message,
    Period,
    ReportAborted,
    ReportCompleted,
)

ACTIVE = (ReportStatus.PENDING, ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING)
"""Statuses in which a report is being built by some coordinator (and resumed if it died)."""


class ReportExists(Exception):
    """The (period, revision) already has a report: the unique constraint said no."""


@dataclass(frozen=True)
class ReportRecord:
    report_id: UUID
    period: Period
    revision: int
    status: ReportStatus
    services: tuple[str, ...]
    requested: tuple[str, ...]
    carried_from: UUID | None
    supersedes: UUID | None
    currency: str | None
    total: Decimal | None
    rate_card: dict[str, Any] | None
    """The rate card that priced this revision, as it was then."""
    owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredReply:
    """One service's part of one report: its outcome and every raw reply body, for audit."""

    service: str
    request_id: str | None
    state: str
    reason_code: str | None
    reason: str | None
    records: int
    raw: tuple[str, ...]
    carried_from: UUID | None = None


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
    claim: str | None = field(default=None, compare=False)
    """The token of the relay claim this row was handed out under (not part of the row's identity)."""


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    sent: int


class ReportStore:
    """Async access to the store (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> ReportStore:
        """Connect and (by default) bring the schema to the newest migration."""
        engine = create_engine(url)
        if migrate:
            await upgrade(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # --- reports -------------------------------------------------------------------------

    async def create_report(
        self,
        *,
        report_id: UUID,
        period: Period,
        revision: int,
        services: Sequence[str],
        requested: Sequence[str],
        at: datetime,
        reason: str,
        owner: str | None = None,
        lease_until: datetime | None = None,
        carried_from: UUID | None = None,
        supersedes: UUID | None = None,
    ) -> ReportRecord:
        """Insert a PENDING report; raises ``ReportExists`` if (period, revision) is taken."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    schema.reports.insert().values(
                        report_id=str(report_id),
                        period_id=period.period_id,
                        revision=revision,
                        period_start=period.start,
                        period_end=period.end,
                        status=ReportStatus.PENDING.value,
                        services=list(services),
                        requested=list(requested),
                        carried_from=_text(carried_from),
                        supersedes=_text(supersedes),
                        owner=owner,
                        lease_until=lease_until,
                        created_at=at,
                        updated_at=at,
                    )
                )
                await _log_transition(connection, report_id, ReportStatus.PENDING, at, reason)
        except IntegrityError:
            raise ReportExists(f"period {period.period_id} already has revision {revision}") from None
        record = await self.get(report_id)
        assert record is not None
        return record

    async def get(self, report_id: UUID) -> ReportRecord | None:
        return await self._first(select(schema.reports).where(schema.reports.c.report_id == str(report_id)))

    async def latest(self, period_id: str) -> ReportRecord | None:
        """The newest revision of a period's report."""
        return await self._first(
            select(schema.reports)
            .where(schema.reports.c.period_id == period_id)
            .order_by(schema.reports.c.revision.desc())
        )

    async def latest_completed(self, period_id: str) -> ReportRecord | None:
        """The newest revision whose invoices were issued (PUBLISHING or COMPLETED)."""
        return await self._first(
            select(schema.reports)
            .where(
                schema.reports.c.period_id == period_id,
                schema.reports.c.status.in_([ReportStatus.COMPLETED, ReportStatus.PUBLISHING]),
            )
            .order_by(schema.reports.c.revision.desc())
        )

    async def _first(self, query: Select[Any]) -> ReportRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(query.limit(1))).one_or_none()
        return None if row is None else _report(row)

    async def list_reports(self, period_id: str | None = None) -> list[ReportRecord]:
        query = select(schema.reports).order_by(schema.reports.c.period_id, schema.reports.c.revision)
        if period_id is not None:
            query = query.where(schema.reports.c.period_id == period_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_report(row) for row in rows]

    async def move(
        self,
        report_id: UUID,
        status: ReportStatus,
        at: datetime,
        reason: str = "",
        *,
        lease_until: datetime | None = None,
    ) -> None:
        """Record a transition the lifecycle table allows; refuse any other."""
        async with self.engine.begin() as connection:
            await _transition(connection, report_id, status, at, reason, lease_until=lease_until)

    async def history(self, report_id: UUID) -> list[Transition]:
        table = schema.report_transitions
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.report_id == str(report_id)).order_by(table.c.id)
                )
            ).all()
        return [Transition(ReportStatus(row.status), row.at, row.reason) for row in rows]

    # --- leases: which coordinator is building a report ----------------------------------

    async def claim_abandoned(
        self, owner: str, now: datetime, lease_until: datetime, period_id: str | None = None
    ) -> list[ReportRecord]:
        """Take over reports still being built whose builder's lease ran out (or was released)."""
        table = schema.reports
        claimed: list[ReportRecord] = []
        for record in await self._active(period_id):
            if record.lease_until is not None and record.lease_until > now and record.owner is not None:
                continue
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    update(table)
                    .where(
                        table.c.report_id == str(record.report_id),
                        table.c.updated_at == record.updated_at,
                        table.c.status.in_([status.value for status in ACTIVE]),
                        or_(
                            table.c.owner.is_(None), table.c.lease_until.is_(None), table.c.lease_until <= now
                        ),
                    )
                    .values(owner=owner, lease_until=lease_until, updated_at=now)
                )
            if result.rowcount == 1:
                refreshed = await self.get(record.report_id)
                assert refreshed is not None
                claimed.append(refreshed)
        return claimed

    async def release(self, report_id: UUID, at: datetime) -> None:
        """Give up a report mid-build (graceful shutdown): the next coordinator resumes it at once."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(schema.reports)
                .where(schema.reports.c.report_id == str(report_id))
                .values(owner=None, lease_until=None, updated_at=at)
            )

    async def _active(self, period_id: str | None = None) -> list[ReportRecord]:
        query = (
            select(schema.reports)
            .where(schema.reports.c.status.in_([status.value for status in ACTIVE]))
            .order_by(schema.reports.c.created_at)
        )
        if period_id is not None:
            query = query.where(schema.reports.c.period_id == period_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_report(row) for row in rows]

    # --- raw replies ---------------------------------------------------------------------

    async def save_replies(self, report_id: UUID, replies: Iterable[StoredReply], at: datetime) -> None:
        """Store (or replace, on a resumed gather) each service's outcome and raw replies."""
        table = schema.service_replies
        async with self.engine.begin() as connection:
            for reply in replies:
                await connection.execute(
                    table.delete().where(
                        table.c.report_id == str(report_id), table.c.service == reply.service
                    )
                )
                await connection.execute(
                    table.insert().values(
                        report_id=str(report_id),
                        service=reply.service,
                        request_id=reply.request_id,
                        state=reply.state,
                        reason_code=reply.reason_code,
                        reason=reply.reason,
                        records=reply.records,
                        raw=list(reply.raw),
                        carried_from=_text(reply.carried_from),
                        stored_at=at,
                    )
                )

    async def replies(self, report_id: UUID) -> dict[str, StoredReply]:
        table = schema.service_replies
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.report_id == str(report_id)).order_by(table.c.service)
                )
            ).all()
        return {
            row.service: StoredReply(
                service=row.service,
                request_id=row.request_id,
                state=row.state,
                reason_code=row.reason_code,
                reason=row.reason,
                records=row.records,
                raw=tuple(row.raw),
                carried_from=_uuid(row.carried_from),
            )
            for row in rows
        }

    # --- finishing a report: invoices and outbox in one transaction ----------------------

    async def finish_completed(
        self,
        report_id: UUID,
        invoices: Sequence[InvoiceIssued],
        completed: ReportCompleted,
        at: datetime,
        reason: str,
        *,
        rate_card: Mapping[str, Any] | None = None,
    ) -> None:
        """PRICING → PUBLISHING: the invoices, their outbox rows and ReportCompleted's, together,
        with the rate card that priced them."""
        async with self.engine.begin() as connection:
            for invoice in invoices:
                await connection.execute(
                    schema.invoices.insert().values(
                        invoice_id=str(invoice.invoice_id),
                        report_id=str(report_id),
                        period_id=invoice.period.period_id,
                        revision=invoice.revision,
                        account_id=invoice.account_id,
                        currency=invoice.currency,
                        total=str(invoice.total),
                        supersedes=_text(invoice.supersedes),
                        body=invoice.model_dump_json(),
                    )
                )
                await _enqueue(
                    connection,
                    report_id,
                    str(invoice.invoice_id),
                    "invoices",
                    ROUTING_INVOICE_ISSUED,
                    invoice,
                    at,
                )
            await _enqueue(
                connection,
                report_id,
                f"{report_id}/{ROUTING_REPORT_COMPLETED}",
                "reports",
                ROUTING_REPORT_COMPLETED,
                completed,
                at,
                mandatory=False,
            )
            await connection.execute(
                update(schema.reports)
                .where(schema.reports.c.report_id == str(report_id))
                .values(
                    currency=completed.currency,
                    total=str(completed.total),
                    rate_card=None if rate_card is None else dict(rate_card),
                )
            )
            await _transition(connection, report_id, ReportStatus.PUBLISHING, at, reason)

    async def finish_aborted(
        self, report_id: UUID, aborted: ReportAborted, at: datetime, reason: str
    ) -> None:
        """→ ABORTED, with ReportAborted in the outbox in the same transaction."""
        async with self.engine.begin() as connection:
            await _enqueue(
                connection,
                report_id,
                f"{report_id}/{ROUTING_REPORT_ABORTED}",
                "reports",
                ROUTING_REPORT_ABORTED,
                aborted,
                at,
                mandatory=False,
            )
            await _transition(connection, report_id, ReportStatus.ABORTED, at, reason)

    async def invoices(
        self, *, report_id: UUID | None = None, period_id: str | None = None, invoice_id: UUID | None = None
    ) -> list[InvoiceIssued]:
        table = schema.invoices
        query = select(table.c.body).order_by(table.c.period_id, table.c.revision, table.c.account_id)
        if report_id is not None:
            query = query.where(table.c.report_id == str(report_id))
        if period_id is not None:
            query = query.where(table.c.period_id == period_id)
        if invoice_id is not None:
            query = query.where(table.c.invoice_id == str(invoice_id))
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [InvoiceIssued.model_validate_json(row.body) for row in rows]

    # --- outbox --------------------------------------------------------------------------

    async def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Unsent rows, oldest first (claimed or not)."""
        table = schema.outbox
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.sent_at.is_(None)).order_by(table.c.id).limit(limit)
                )
            ).all()
        return [_outbox_row(row) for row in rows]

    async def claim_pending(self, now: datetime, until: datetime, reports: int = 10) -> list[OutboxRow]:
        """Claim the unsent rows of the oldest reports with unsent rows nobody else holds.

        A whole report at a time, so one relay publishes its invoices before its report event;
        a claim that outlives ``until`` (its relay died) may be taken by another relay.
        """
        table = schema.outbox
        unsent = table.c.sent_at.is_(None)
        free = and_(unsent, or_(table.c.claimed_until.is_(None), table.c.claimed_until < now))
        held = select(table.c.report_id).where(unsent, table.c.claimed_until >= now)
        token = str(uuid4())
        async with self.engine.begin() as connection:
            oldest = (
                select(table.c.report_id, func.min(table.c.id).label("first"))
                .where(free, table.c.report_id.not_in(held))
                .group_by(table.c.report_id)
                .order_by("first")
                .limit(reports)
                .subquery()
            )
            report_ids = (await connection.execute(select(oldest.c.report_id))).scalars().all()
            if not report_ids:
                return []
            await connection.execute(
                update(table)
                .where(free, table.c.report_id.in_(report_ids))
                .values(claim=token, claimed_until=until)
            )
            rows = (
                await connection.execute(select(table).where(table.c.claim == token).order_by(table.c.id))
            ).all()
        return [_outbox_row(row) for row in rows]

    async def mark_sent(self, row: OutboxRow, at: datetime) -> bool:
        """Mark a row sent after its confirm; completes its report when it was the last one.

        Returns True when the report moved to COMPLETED.
        """
        table = schema.outbox
        async with self.engine.begin() as connection:
            # Lock the report first: concurrent marks of its last rows then count one after the
            # other, so exactly one of them sees none left (PostgreSQL reads committed data only).
            status = (
                await connection.execute(
                    select(schema.reports.c.status)
                    .where(schema.reports.c.report_id == str(row.report_id))
                    .with_for_update()
                )
            ).scalar_one()
            await connection.execute(
                update(table)
                .where(table.c.id == row.id)
                .values(
                    sent_at=at, attempts=table.c.attempts + 1, last_error=None, claim=None, claimed_until=None
                )
            )
            left = (
                await connection.execute(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.report_id == str(row.report_id), table.c.sent_at.is_(None))
                )
            ).scalar_one()
            if left == 0 and status == ReportStatus.PUBLISHING:
                await _transition(
                    connection,
                    row.report_id,
                    ReportStatus.COMPLETED,
                    at,
                    "every invoice and the report event confirmed",
                )
                return True
        return False

    async def mark_failed(self, row: OutboxRow, error: str) -> None:
        """Keep the row unsent, note why, and hand it back for the next attempt."""
        table = schema.outbox
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.id == row.id)
                .values(
                    attempts=table.c.attempts + 1, last_error=error[:2000], claim=None, claimed_until=None
                )
            )

    async def extend_claim(self, claim: str, until: datetime) -> None:
        """Keep holding a claim's unsent rows: a large report takes longer than one claim period."""
        table = schema.outbox
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.claim == claim, table.c.sent_at.is_(None))
                .values(claimed_until=until)
            )

    async def release_claims(self, rows: Iterable[OutboxRow]) -> None:
        """Hand unsent rows back at once (the relay lost its broker) instead of at claim expiry."""
        table = schema.outbox
        ids = [row.id for row in rows]
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.id.in_(ids), table.c.sent_at.is_(None))
                .values(claim=None, claimed_until=None)
            )

    async def outbox_counts(self) -> OutboxCounts:
        table = schema.outbox
        async with self.engine.connect() as connection:
            pending = (
                await connection.execute(
                    select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
                )
            ).scalar_one()
            sent = (
                await connection.execute(
                    select(func.count()).select_from(table).where(table.c.sent_at.is_not(None))
                )
            ).scalar_one()
        return OutboxCounts(pending=pending, sent=sent)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite waits for a busy writer instead of failing at once."""
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_pre_ping=True)


async def _transition(
    connection: AsyncConnection,
    report_id: UUID,
    status: ReportStatus,
    at: datetime,
    reason: str,
    *,
    lease_until: datetime | None = None,
) -> None:
    table = schema.reports
    current = (
        await connection.execute(select(table.c.status).where(table.c.report_id == str(report_id)))
    ).scalar_one_or_none()
    if current is None:
        raise LookupError(f"no report {report_id}")
    check_transition(report_id, ReportStatus(current), status)
    values: dict[str, object] = {"status": status.value, "updated_at": at}
    if status not in ACTIVE:
        values.update(owner=None, lease_until=None)
    elif lease_until is not None:
        values["lease_until"] = lease_until
    # The status guard makes two coordinators racing on one report fail instead of interleaving.
    result = await connection.execute(
        update(table)
        .where(and_(table.c.report_id == str(report_id), table.c.status == current))
        .values(**values)
    )
    if result.rowcount != 1:
        raise IllegalTransition(f"report {report_id}: moved by someone else while going {current} → {status}")
    await _log_transition(connection, report_id, status, at, reason)


async def _log_transition(
    connection: AsyncConnection, report_id: UUID, status: ReportStatus, at: datetime, reason: str
) -> None:
    await connection.execute(
        schema.report_transitions.insert().values(
            report_id=str(report_id), status=status.value, at=at, reason=reason
        )
    )


async def _enqueue(
    connection: AsyncConnection,
    report_id: UUID,
    message_id: str,
    exchange: str,
    routing_key: str,
    message: Message,
    at: datetime,
    *,
    mandatory: bool = True,
) -> None:
    await connection.execute(
        schema.outbox.insert().values(
            report_id=str(report_id),
            message_id=message_id,
            exchange=exchange,
            routing_key=routing_key,
            message_type=type(message).__name__,
            mandatory=mandatory,
            body=message.model_dump_json(),
            created_at=at,
            attempts=0,
        )
    )


def _report(row: Row[Any]) -> ReportRecord:
    return ReportRecord(
        report_id=UUID(row.report_id),
        period=Period(period_id=row.period_id, start=row.period_start, end=row.period_end),
        revision=row.revision,
        status=ReportStatus(row.status),
        services=tuple(row.services),
        requested=tuple(row.requested),
        carried_from=_uuid(row.carried_from),
        supersedes=_uuid(row.supersedes),
        currency=row.currency,
        total=None if row.total is None else Decimal(row.total),
        rate_card=row.rate_card,
        owner=row.owner,
        lease_until=row.lease_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _outbox_row(row: Row[Any]) -> OutboxRow:
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
        claim=row.claim,
    )


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: object) -> UUID | None:
    return None if value is None else UUID(str(value))
