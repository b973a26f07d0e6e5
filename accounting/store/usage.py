"""A gather's records as pricing and reconciling read them back: by kind, and a window of whole
accounts at a time in account order, so no report is ever held in memory whole."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.store import schema
from accounting.store.engine import refresh_statistics
from accounting.store.replies import UsageRow


class UsageRepository:
    engine: AsyncEngine

    async def record_units(self, gather_id: int) -> list[tuple[str, str, str, int]]:
        """``(service, metric, unit, records)`` of every kind of record in a gather (read first of
        all when pricing: the planner's statistics are refreshed for the reads that follow)."""
        await refresh_statistics(self.engine, schema.usage_records)
        table = schema.usage_records
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table.c.service, table.c.metric, table.c.unit, func.count())
                    .where(table.c.gather_id == gather_id)
                    .group_by(table.c.service, table.c.metric, table.c.unit)
                    .order_by(table.c.service, table.c.metric, table.c.unit)
                )
            ).all()
        return [(row[0], row[1], row[2], int(row[3])) for row in rows]

    async def usage_page(self, gather_id: int, after: str, limit: int) -> list[UsageRow]:
        """Up to ``limit`` records of accounts after ``after``, in account order."""
        table = schema.usage_records
        return await self._usage(
            select(*_usage_columns())
            .where(table.c.gather_id == gather_id, table.c.account_id > after)
            .order_by(table.c.account_id)
            .limit(limit)
        )

    async def usage_window(self, gather_id: int, after: str, limit: int) -> tuple[list[UsageRow], str | None]:
        """The next whole accounts after ``after`` (about ``limit`` records), and the last of them
        (None: this is the end). What pricing and reconciling read, a window at a time."""
        rows = await self.usage_page(gather_id, after, limit)
        if len(rows) < limit:
            return rows, None
        last = rows[-1][0]
        cut = len(rows)
        while cut > 0 and rows[cut - 1][0] == last:  # the page may end inside an account
            cut -= 1
        if cut == 0:  # one account with more records than a page: take it whole
            return await self.usage_of_account(gather_id, last), last
        return rows[:cut], rows[cut - 1][0]

    async def usage_of_account(self, gather_id: int, account_id: str) -> list[UsageRow]:
        table = schema.usage_records
        return await self._usage(
            select(*_usage_columns()).where(table.c.gather_id == gather_id, table.c.account_id == account_id)
        )

    async def _usage(self, query: Any) -> list[UsageRow]:
        async with self.engine.connect() as connection:
            result = await connection.execute(query)
            return [(row[0], row[1], row[2], row[3], row[4]) for row in result]


def _usage_columns() -> tuple[Any, ...]:
    table = schema.usage_records
    return (table.c.account_id, table.c.service, table.c.metric, table.c.unit, table.c.quantity)
