"""PeriodClosed events the billing calendar refused: stored with their reason, never a report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.store import schema
from contracts import Period


@dataclass(frozen=True)
class PeriodRefusal:
    period: Period
    requested_by: str
    reason: str
    refused_at: datetime


class RefusalsRepository:
    engine: AsyncEngine

    async def record_refusal(self, refusal: PeriodRefusal) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(schema.period_refusals).values(
                    period_id=refusal.period.period_id,
                    period_start=refusal.period.start,
                    period_end=refusal.period.end,
                    requested_by=refusal.requested_by,
                    reason=refusal.reason,
                    refused_at=refusal.refused_at,
                )
            )

    async def refusals(self, period_id: str | None = None, limit: int = 100) -> list[PeriodRefusal]:
        """The latest refusals first (of ``period_id`` only, when given)."""
        table = schema.period_refusals
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        if period_id is not None:
            query = query.where(table.c.period_id == period_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            PeriodRefusal(
                Period(period_id=row.period_id, start=row.period_start, end=row.period_end),
                row.requested_by,
                row.reason,
                row.refused_at,
            )
            for row in rows
        ]
