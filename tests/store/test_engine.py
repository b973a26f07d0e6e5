"""The engine: WAL on SQLite, the bulk insert, the fence, and schema.py matching the migrations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, text

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema
from accounting.store.engine import create_engine, fence, insert_rows
from accounting.store.repository import LeaseLost, ReportStore
from contracts import Period
from tests.store.support import (
    NOVEMBER,
    OCTOBER,
    A,
    B,
    advance,
    chunk,
    minutes,
    new_report,
    publishing_report,
    record,
    report_at,
    status,
)

PLUS_TWO = timezone(timedelta(hours=2))


async def test_a_sqlite_file_store_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/wal.sqlite3")
    try:
        async with engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
    finally:
        await engine.dispose()

    assert mode == "wal"


async def test_sqlite_writers_in_one_process_take_turns_however_long_a_write_takes(tmp_path: Path) -> None:
    """SQLite's busy handler would fail the second writer after ``busy_timeout`` (at 1,000,000
    accounts the relay's claim failed so, behind the transaction that issued every invoice); in
    one process writers wait for their turn instead, in the order they came."""
    store = await ReportStore.open(f"sqlite+aiosqlite:///{tmp_path}/turns.sqlite3", busy_timeout=0.2)
    order: list[str] = []
    try:

        async def write(name: str, hold: float) -> None:
            async with store.engine.begin() as connection:
                await connection.execute(text(f"INSERT INTO number_series VALUES ('{name}', 0)"))
                order.append(name)
                await asyncio.sleep(hold)

        long = asyncio.create_task(write("long", 1.0))  # five busy timeouts
        await asyncio.sleep(0.05)
        await asyncio.gather(write("second", 0), write("third", 0))
        await long
    finally:
        await store.close()

    assert order == ["long", "second", "third"]


async def test_a_write_inside_a_write_of_the_same_task_is_let_through(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/nested.sqlite3")
    try:
        async with asyncio.timeout(5), engine.begin() as outer:
            await outer.execute(text("CREATE TABLE t (x INTEGER)"))
        # The inner one is another connection: without letting it through, it would wait forever.
        async with asyncio.timeout(5), engine.begin(), engine.begin() as inner:
            await inner.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def test_insert_rows_stores_utc_datetimes_and_booleans_as_the_normal_path_reads_them(
    store: ReportStore,
) -> None:
    record = await new_report(store)
    outbox = schema.outbox
    columns: tuple[str, ...] = ("final", "message_id", "created_at", "report_id", "exchange", "routing_key")
    columns += ("message_type", "mandatory", "ready", "attempts", "sent_at")
    local = datetime(2026, 11, 1, 2, 5, 0, 250000, tzinfo=PLUS_TWO)
    rows: list[tuple[Any, ...]] = [
        (True, "m-1", local, str(record.report_id), "reports", "k", "T", False, True, 0, None),
        (False, "m-2", minutes(1), str(record.report_id), "invoices", "k", "T", True, False, 3, minutes(2)),
    ]

    async with store.engine.begin() as connection:
        await insert_rows(connection, outbox, columns, rows)
        await insert_rows(connection, outbox, columns, [])
    async with store.engine.connect() as connection:
        found = (
            await connection.execute(
                select(*(outbox.c[name] for name in columns)).order_by(outbox.c.message_id)
            )
        ).all()

    assert [tuple(row) for row in found] == [
        (True, "m-1", datetime(2026, 11, 1, 0, 5, 0, 250000, tzinfo=UTC), *rows[0][3:]),
        tuple(rows[1]),
    ]
    assert all(type(row.final) is bool and type(row.ready) is bool for row in found)
    assert found[0].created_at.tzinfo is UTC and found[1].sent_at.tzinfo is UTC
    assert (await store.outbox_status()).pending == 1


async def test_insert_rows_in_table_order_without_conversions_round_trips(store: ReportStore) -> None:
    records = schema.usage_records
    columns = ("gather_id", "account_id", "service", "resource_id", "metric", "unit", "quantity")
    rows = [(7, f"acct-{n}", "compute", "vm-1", "vcpu_seconds", "vCPU-s", f"{n}.5") for n in range(3)]

    async with store.engine.begin() as connection:
        await insert_rows(connection, records, columns, rows)

    assert await store.usage_page(7, "", 10) == [
        (f"acct-{n}", "compute", "vcpu_seconds", "vCPU-s", f"{n}.5") for n in range(3)
    ]


async def test_insert_rows_refuses_a_naive_datetime(store: ReportStore) -> None:
    columns = ("id", "report_id", "attempt", "owner", "started_at")

    with pytest.raises(ValueError, match="naive datetime"):
        async with store.engine.begin() as connection:
            await insert_rows(
                connection, schema.gathers, columns, [(1, "r", "x", None, datetime(2026, 11, 1))]
            )

    assert await store.gather_of(uuid4()) is None


async def test_fence_takes_the_report_for_its_holder_and_refuses_anyone_else(store: ReportStore) -> None:
    record = await new_report(store, lease_until=minutes(30))

    async with store.engine.begin() as connection:
        await fence(connection, record.report_id, A, (ReportStatus.PENDING,), lease_until=minutes(40))
    with pytest.raises(LeaseLost, match="pending, held by coordinator-a"):
        async with store.engine.begin() as connection:
            await fence(connection, record.report_id, B, (ReportStatus.PENDING,))
    with pytest.raises(LeaseLost, match="pending, held by coordinator-a"):
        async with store.engine.begin() as connection:
            await fence(connection, record.report_id, A, (ReportStatus.GATHERING,))
    with pytest.raises(LeaseLost, match="no such report"):
        async with store.engine.begin() as connection:
            await fence(connection, uuid4(), A, (ReportStatus.PENDING,))

    fenced = await store.get(record.report_id)
    assert fenced is not None and (fenced.owner, fenced.lease_until) == (A, minutes(40))


async def test_the_migrated_schema_matches_schema_py(store: ReportStore) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, schema.metadata))

    async with store.engine.connect() as connection:
        found = await connection.run_sync(differences)

    assert found == []


async def test_builders_and_a_relay_writing_at_once_all_get_through(store: ReportStore) -> None:
    """On SQLite every writer waits for the one before it (WAL, busy timeout) rather than failing."""
    gathering = await report_at(store, ReportStatus.GATHERING, period=OCTOBER)
    gather_id = await store.begin_gather(
        gathering.report_id, A, attempt="x", at=minutes(2), requested=("compute",)
    )
    moving = await new_report(store, period=NOVEMBER, owner=B, lease_until=minutes(60))
    publishing, _, _ = await publishing_report(store, accounts=40, period=Period.month("2026-12"))

    async def append() -> None:
        for seq in range(10):
            batch = [chunk("compute", seq, [record(f"acct-{seq}-{n}") for n in range(20)])]
            assert await store.append_chunks(gathering.report_id, A, gather_id, batch, minutes(3)) == []

    async def relay() -> None:
        while rows := await store.claim_window(minutes(20), minutes(21), limit=7):
            await store.mark_sent(rows, minutes(20))

    await asyncio.gather(append(), advance(store, moving.report_id, ReportStatus.PRICING, owner=B), relay())

    assert await store.record_units(gather_id) == [("compute", "vcpu_seconds", "vCPU-s", 200)]
    assert await status(store, moving.report_id) is ReportStatus.PRICING
    assert await status(store, publishing.report_id) is ReportStatus.COMPLETED
