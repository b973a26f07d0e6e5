"""Migration 0007 (``outbox.ready_at``) on both backends: an expand-only step. Rows written before
it keep working (their lag and age count from ``created_at``), the release before it runs on the
migrated store unchanged, and its downgrade gives back exactly the 0006 schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.store import schema
from accounting.store.migrate import current_revision, downgrade, upgrade
from accounting.store.repository import ReportStore
from contracts import report_id
from tests.store.support import OCTOBER, Backend, minutes, new_report

PREVIOUS = "0006"
Shape = tuple[list[tuple[str, bool]], list[tuple[str, tuple[str, ...], bool, str]]]
REPORT = report_id(OCTOBER.period_id, 1)
"""The one report of the store (``new_report``'s), which the rows name."""


def previous_outbox() -> Table:
    """The outbox as the release before 0007 knows it: every column but ``ready_at``."""
    columns = [
        Column(column.name, column.type, primary_key=column.primary_key, nullable=column.nullable)
        for column in schema.outbox.columns
        if column.name != "ready_at"
    ]
    return Table("outbox", MetaData(), *columns)


OLD = previous_outbox()


def old_row(message_id: str, at: datetime, *, ready: bool, sent: datetime | None = None) -> dict[str, Any]:
    """An outbox row as the previous release writes it: a report event, its body in the row."""
    return {
        "report_id": str(REPORT),
        "message_id": message_id,
        "exchange": "reports",
        "routing_key": "report.completed",
        "message_type": "ReportCompleted",
        "mandatory": False,
        "body": "{}",
        "created_at": at,
        "sent_at": sent,
        "attempts": 0,
        "ready": ready,
        "final": False,
    }


async def outbox_shape(engine: AsyncEngine) -> Shape:
    """The outbox's columns (name, nullable) and indexes (name, columns, unique, a partial index's
    condition), as the database has them."""

    def read(sync: Any) -> Shape:
        inspector = inspect(sync)
        columns = [(column["name"], bool(column["nullable"])) for column in inspector.get_columns("outbox")]
        indexes = sorted(
            (
                str(index["name"]),
                tuple(str(name) for name in index["column_names"]),
                bool(index["unique"]),
                str(sorted((key, str(value)) for key, value in index.get("dialect_options", {}).items())),
            )
            for index in inspector.get_indexes("outbox")
        )
        return columns, indexes

    async with engine.connect() as connection:
        return await connection.run_sync(read)


@pytest.fixture
async def previous(backend: Backend) -> AsyncIterator[ReportStore]:
    """A store at 0006, with one report, as the release before 0007 left it."""
    engine = backend.engine()
    try:
        await upgrade(engine, PREVIOUS)
        store = ReportStore(engine)
        await new_report(store)
        yield store
    finally:
        await engine.dispose()


async def test_rows_written_before_0007_have_no_ready_at_and_count_from_when_they_were_written(
    previous: ReportStore,
) -> None:
    async with previous.engine.begin() as connection:
        await connection.execute(
            OLD.insert(),
            [
                old_row("sent", minutes(1), ready=True, sent=minutes(2)),
                old_row("oldest", minutes(3), ready=True),
                old_row("newer", minutes(4), ready=True),
                old_row("staged", minutes(0), ready=False),
            ],
        )

    await upgrade(previous.engine)

    assert await current_revision(previous.engine) == "0007"
    columns, _ = await outbox_shape(previous.engine)
    assert ("ready_at", True) in columns  # nullable: the previous release writes none
    async with previous.engine.connect() as connection:
        stored = (await connection.execute(select(schema.outbox.c.ready_at))).scalars().all()
    assert stored == [None] * 4  # nothing backfilled: readers fall back to created_at
    assert [(row.message_id, row.ready_at) for row in await previous.pending()] == [
        ("oldest", minutes(3)),
        ("newer", minutes(4)),
    ]
    assert (await previous.outbox_status()).oldest_pending_at == minutes(3)  # not the staged row


async def test_the_previous_release_runs_on_0007_unchanged(previous: ReportStore) -> None:
    await upgrade(previous.engine)

    # What the release before 0007 does on the outbox: insert without ready_at, make rows ready
    # without it, read whole rows of the columns it knows.
    async with previous.engine.begin() as connection:
        await connection.execute(OLD.insert(), [old_row("a", minutes(5), ready=False)])
        await connection.execute(update(OLD).where(OLD.c.ready.is_(False)).values(ready=True))
        rows = (await connection.execute(select(OLD))).all()
    assert [(row.message_id, row.ready) for row in rows] == [("a", True)]

    # And this release reads its rows: ready since they were written, for want of better.
    [pending] = await previous.pending()
    assert (pending.message_id, pending.ready_at) == ("a", minutes(5))
    await previous.mark_sent([pending], minutes(7))
    assert (await previous.outbox_status()).sent == 1


async def test_the_downgrade_drops_ready_at_and_gives_back_the_0006_schema(previous: ReportStore) -> None:
    before = await outbox_shape(previous.engine)
    await upgrade(previous.engine)
    async with previous.engine.begin() as connection:
        await connection.execute(OLD.insert(), [old_row("kept", minutes(1), ready=True)])
        await connection.execute(update(schema.outbox).values(ready_at=minutes(2)))

    await downgrade(previous.engine, PREVIOUS)

    assert await current_revision(previous.engine) == PREVIOUS
    assert await outbox_shape(previous.engine) == before
    async with previous.engine.connect() as connection:
        kept = (await connection.execute(select(OLD.c.message_id, OLD.c.created_at))).all()
    assert [tuple(row) for row in kept] == [("kept", minutes(1))]  # only the timing is lost

    await upgrade(previous.engine)
    assert await current_revision(previous.engine) == "0007"
    assert [row.ready_at for row in await previous.pending()] == [minutes(1)]
