"""The store's engine, its bulk insert, and the fence every builder write goes through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Table, Update, case, event, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema

DEFAULT_BUSY_TIMEOUT = 30.0


def create_engine(url: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> AsyncEngine:
    """An async engine. SQLite runs in WAL mode (readers never wait for the writer, and a commit
    is one append), its writers in this process take turns (``WritersInTurn``), and a writer of
    another process waits up to ``busy_timeout`` seconds for a busy database before failing."""
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout})
    if ":memory:" not in url and url.rstrip("/") != "sqlite+aiosqlite:":

        @event.listens_for(engine.sync_engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return WritersInTurn(engine.sync_engine)
    return engine


class WritersInTurn(AsyncEngine):
    """A SQLite engine whose write transactions (``begin``) take turns, first come first served.

    SQLite lets one writer in at a time; the others wait in its busy handler, which sleeps and
    retries with no queue and no order. Within one coordinator that made a report's writes wait
    behind another report's stream of batches (a flood of tiny chunks), a lease renewal wait behind
    a builder's windows, and a relay's claim fail with "database is locked" after 30 s behind the
    one transaction that issues a million invoices. Here each writer waits for its turn on an
    asyncio lock instead, for as long as it takes; only writers of other processes still meet the
    busy handler. A task that already holds the turn (a write inside a write) is let through.
    """

    _turn: asyncio.Lock | None = None
    _holder: asyncio.Task[Any] | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            async with super().begin() as connection:
                yield connection
            return
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            self._holder = task
            try:
                async with super().begin() as connection:
                    yield connection
            finally:
                self._holder = None


async def refresh_statistics(engine: AsyncEngine, *tables: Table) -> None:
    """Have PostgreSQL's planner look at ``tables`` again after a bulk write.

    A report writes hundreds of thousands of rows in seconds, faster than autovacuum notices; with
    the statistics of a nearly empty table the planner chose sequential scans of the invoices'
    120 MB for every relay window (seconds each). SQLite plans from its indexes: nothing to do.
    """
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as connection:
        for table in tables:
            await connection.exec_driver_sql(f"ANALYZE {table.name}")
        await connection.commit()


class LeaseLost(RuntimeError):
    """This coordinator no longer holds the report's lease: another one took it over (or the report
    moved on). It must stop writing; the report's new owner builds it."""


Renewal = Callable[[], datetime]
"""When the builder's lease should run out if renewed now (``LeaseKeeper.renewal``): a builder's
long write renews its lease as its transaction's last statement, so the lease is fresh when the
write commits however long it took."""


def held_by(report_id: UUID, owner: str, statuses: Iterable[ReportStatus]) -> Update:
    """An UPDATE of the report's row that matches only while ``owner`` holds it in ``statuses``."""
    table = schema.reports
    return update(table).where(
        table.c.report_id == str(report_id),
        table.c.owner == owner,
        table.c.status.in_([status.value for status in statuses]),
    )


def lease_extended_to(until: datetime) -> ColumnElement[Any]:
    """``lease_until`` renewed to ``until``, never shortened: a renewal computed before it waited
    for a long write to commit would otherwise undo the fresher renewal that write made."""
    current = schema.reports.c.lease_until
    return case((current > literal(until, current.type), current), else_=literal(until, current.type))


async def fence(
    connection: AsyncConnection,
    report_id: UUID,
    owner: str,
    statuses: Iterable[ReportStatus],
    *,
    lease_until: datetime | None = None,
) -> None:
    """Take the report's row for this transaction, or raise ``LeaseLost`` unless ``owner`` holds it
    in one of ``statuses``. It is an UPDATE so that it locks the row (PostgreSQL) or the database
    (SQLite) at once: a takeover cannot commit between this check and the writes after it."""
    table = schema.reports
    values: dict[str, Any] = {"owner": owner} if lease_until is None else {"lease_until": lease_until}
    result = await connection.execute(held_by(report_id, owner, statuses).values(**values))
    if result.rowcount != 1:
        found = (
            await connection.execute(
                select(table.c.status, table.c.owner).where(table.c.report_id == str(report_id))
            )
        ).one_or_none()
        held = "no such report" if found is None else f"{found.status}, held by {found.owner or 'nobody'}"
        raise LeaseLost(f"report {report_id}: {owner} no longer builds it ({held})")


async def renew_at_commit(
    connection: AsyncConnection,
    report_id: UUID,
    owner: str,
    statuses: Iterable[ReportStatus],
    renewal: Renewal | None,
) -> None:
    """The last statement of a fenced write: renew the lease from now (no-op without ``renewal``).

    The keeper's own renewal cannot commit while such a write holds the row (PostgreSQL) or the
    database (SQLite); without this a write longer than the lease would commit with the lease
    already run out, and a coordinator waiting to take the report over would then win the race
    against the keeper.
    """
    if renewal is not None:
        until = lease_extended_to(renewal())
        await connection.execute(held_by(report_id, owner, statuses).values(lease_until=until))


async def insert_rows(
    connection: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows given as tuples in ``columns`` order, in one executemany.

    SQLAlchemy's own executemany builds and processes a dictionary per row; for the hundreds of
    thousands of records of one report that costs more than the database does. This compiles the
    INSERT once for the dialect, applies each column type's bind processor (UTC datetimes) only
    where there is one, and hands plain tuples to the driver.
    """
    if not rows:
        return
    dialect = connection.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order = [columns.index(name) for name in compiled.positiontup or ()]
    if len(order) != len(columns):
        raise ValueError(f"{table.name}: the dialect's INSERT is not positional ({dialect.name})")
    processors: list[tuple[int, Callable[[Any], Any]]] = []
    for position, index in enumerate(order):
        bind = table.c[columns[index]].type._cached_bind_processor(dialect)
        if bind is not None:
            processors.append((position, bind))
    if order == list(range(len(columns))) and not processors:
        prepared: Sequence[Sequence[Any]] = rows
    else:
        prepared = []
        for row in rows:
            values = [row[index] for index in order]
            for position, process in processors:
                values[position] = process(values[position])
            prepared.append(tuple(values))
    await connection.exec_driver_sql(compiled.string, list(prepared))
