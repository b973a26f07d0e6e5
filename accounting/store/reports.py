"""Reports, their status history, and the leases that say which coordinator builds each one."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Row, Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accounting.core.lifecycle import IllegalTransition, ReportStatus, Transition, check_transition
from accounting.store import schema
from accounting.store.engine import LeaseLost, held_by, lease_extended_to
from contracts import Period

ACTIVE = (ReportStatus.PENDING, ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING)
"""Statuses in which a report is being built by some coordinator (and resumed if it died)."""

LEASED = (*ACTIVE, ReportStatus.ABORTED)
"""Statuses in which a coordinator may hold a report's lease: while building it, and after an
abort while it still stores the answers of the services that had not failed."""


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
    build_attempts: int = 0
    """Builds started (each gather attempt counts); bounded by the coordinator's max_build_attempts."""
    last_error: str | None = None
    """Why the last build failed, when it failed for a reason worth retrying."""

    def collecting(self, now: datetime) -> bool:
        """An aborted report whose builder is still storing the other services' answers."""
        return (
            self.status is ReportStatus.ABORTED
            and self.owner is not None
            and self.lease_until is not None
            and self.lease_until > now
        )


FINAL = (ReportStatus.COMPLETED, ReportStatus.ABORTED)
"""Statuses a report never leaves."""


@dataclass(frozen=True)
class ReportsStatus:
    """Whether periods close, as ``/metrics`` shows it: when the newest report reached each final
    status, and how many priced reports wait for a reviewer."""

    last_final_at: Mapping[ReportStatus, datetime]
    """The time of the newest transition to COMPLETED and to ABORTED (a status no report reached
    yet is absent)."""
    awaiting_approval: int
    """Reports in DRAFT."""


class ReportsRepository:
    """Reports and their transitions. Every write a builder makes is fenced by its lease."""

    engine: AsyncEngine

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
        rate_card: Mapping[str, Any] | None = None,
    ) -> ReportRecord:
        """Insert a PENDING report; raises ``ReportExists`` if (period, revision) is taken.

        ``rate_card`` is the card the report will be priced with, fixed when it is accepted: a
        coordinator restarted with a new card still prices it with this one."""
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
                        rate_card=None if rate_card is None else dict(rate_card),
                        owner=owner,
                        lease_until=lease_until,
                        created_at=at,
                        updated_at=at,
                    )
                )
                await log_transition(connection, report_id, ReportStatus.PENDING, at, reason)
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
        return None if row is None else report_record(row)

    async def list_reports(self, period_id: str | None = None) -> list[ReportRecord]:
        query = select(schema.reports).order_by(schema.reports.c.period_id, schema.reports.c.revision)
        if period_id is not None:
            query = query.where(schema.reports.c.period_id == period_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [report_record(row) for row in rows]

    async def move(
        self,
        report_id: UUID,
        status: ReportStatus,
        at: datetime,
        reason: str = "",
        *,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> None:
        """Record a transition the lifecycle table allows; refuse any other. With ``owner``, only
        while that coordinator holds the report (else ``LeaseLost``)."""
        async with self.engine.begin() as connection:
            await transition(connection, report_id, status, at, reason, owner=owner, lease_until=lease_until)

    async def history(self, report_id: UUID) -> list[Transition]:
        table = schema.report_transitions
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.report_id == str(report_id)).order_by(table.c.id)
                )
            ).all()
        return [Transition(ReportStatus(row.status), row.at, row.reason) for row in rows]

    async def reports_status(self) -> ReportsStatus:
        """The newest final transition of each outcome (its transition's own time: a report's row
        changes later, when an aborted builder releases it) and the number of drafts."""
        transitions, reports = schema.report_transitions, schema.reports
        async with self.engine.connect() as connection:
            finals = (
                await connection.execute(
                    select(transitions.c.status, func.max(transitions.c.at))
                    .where(transitions.c.status.in_([status.value for status in FINAL]))
                    .group_by(transitions.c.status)
                )
            ).all()
            drafts = (
                await connection.execute(
                    select(func.count())
                    .select_from(reports)
                    .where(reports.c.status == ReportStatus.DRAFT.value)
                )
            ).scalar_one()
        return ReportsStatus(
            last_final_at={ReportStatus(status): at for status, at in finals if at is not None},
            awaiting_approval=int(drafts),
        )

    # --- leases: which coordinator is building a report ----------------------------------

    async def renew_lease(self, report_id: UUID, owner: str, until: datetime) -> bool:
        """Keep the report for ``owner`` until ``until`` (or later, if a write of the builder's
        renewed it further meanwhile); False when the lease was lost."""
        return await self._update_held(report_id, owner, LEASED, lease_until=lease_extended_to(until))

    async def claim_abandoned(
        self,
        owner: str,
        now: datetime,
        lease_until: datetime,
        period_id: str | None = None,
        exclude: Collection[UUID] = (),
    ) -> list[ReportRecord]:
        """Take over reports still being built whose builder's lease ran out (or was released);
        never one in ``exclude`` (the reports this coordinator is building itself)."""
        table = schema.reports
        claimed: list[ReportRecord] = []
        for record in await self._active(period_id):
            if record.report_id in exclude:
                continue
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

    async def note_failure(self, report_id: UUID, owner: str, error: str, retry_at: datetime) -> bool:
        """Keep the report for ``owner`` until ``retry_at`` (a backoff), noting why its build failed;
        any coordinator may then resume it. False when ``owner`` no longer holds it."""
        return await self._update_held(
            report_id, owner, ACTIVE, last_error=error[:2000], lease_until=retry_at
        )

    async def _update_held(
        self, report_id: UUID, owner: str, statuses: Collection[ReportStatus], **values: Any
    ) -> bool:
        """Set ``values`` on the report if ``owner`` holds it in one of ``statuses``; False if not."""
        async with self.engine.begin() as connection:
            result = await connection.execute(held_by(report_id, owner, statuses).values(**values))
        return bool(result.rowcount == 1)

    async def release(self, report_id: UUID, at: datetime, owner: str | None = None) -> None:
        """Give up a report (graceful shutdown, or the end of collecting after an abort): the next
        coordinator resumes one still being built at once. With ``owner``, only if it holds it."""
        table = schema.reports
        query = update(table).where(table.c.report_id == str(report_id))
        if owner is not None:
            query = query.where(table.c.owner == owner)
        async with self.engine.begin() as connection:
            await connection.execute(query.values(owner=None, lease_until=None, updated_at=at))

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
        return [report_record(row) for row in rows]


async def transition(
    connection: AsyncConnection,
    report_id: UUID,
    status: ReportStatus,
    at: datetime,
    reason: str,
    *,
    owner: str | None = None,
    lease_until: datetime | None = None,
) -> None:
    """Move the report to ``status`` and log it. The update is guarded by the status read (two
    writers can never interleave) and, with ``owner``, by the lease: a coordinator whose report
    was taken over gets ``LeaseLost``. Leaving the build (PUBLISHING, COMPLETED, ABORTED) drops
    the lease unless ``lease_until`` keeps it (an aborted report still storing answers)."""
    table = schema.reports
    found = (
        await connection.execute(
            select(table.c.status, table.c.owner).where(table.c.report_id == str(report_id))
        )
    ).one_or_none()
    if found is None:
        raise LookupError(f"no report {report_id}")
    current = ReportStatus(found.status)
    if owner is not None and found.owner != owner:
        raise LeaseLost(
            f"report {report_id}: {owner} no longer builds it ({current}, held by {found.owner or 'nobody'})"
        )
    check_transition(report_id, current, status)
    values: dict[str, object] = {"status": status.value, "updated_at": at}
    if lease_until is not None:
        values["lease_until"] = lease_until
    elif status not in ACTIVE:
        values.update(owner=None, lease_until=None)
    guard = and_(table.c.report_id == str(report_id), table.c.status == current)
    if owner is not None:
        guard = and_(guard, table.c.owner == owner)
    result = await connection.execute(update(table).where(guard).values(**values))
    if result.rowcount != 1:
        if owner is not None:
            raise LeaseLost(f"report {report_id}: taken over while going {current} → {status}")
        raise IllegalTransition(f"report {report_id}: moved by someone else while going {current} → {status}")
    await log_transition(connection, report_id, status, at, reason)


async def log_transition(
    connection: AsyncConnection, report_id: UUID, status: ReportStatus, at: datetime, reason: str
) -> None:
    await connection.execute(
        schema.report_transitions.insert().values(
            report_id=str(report_id), status=status.value, at=at, reason=reason
        )
    )


def report_record(row: Row[Any]) -> ReportRecord:
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
        build_attempts=row.build_attempts,
        last_error=row.last_error,
    )


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: object) -> UUID | None:
    return None if value is None else UUID(str(value))
