"""Migration 0002 on a store written by the old code (revision 0001), on both backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, DateTime, bindparam, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from accounting.core.lifecycle import ReportStatus
from accounting.store import migrate, schema
from accounting.store.migrate import upgrade
from accounting.store.repository import NOT_ASKED, ReportStore, StoredReply
from contracts import report_id
from tests.store.support import (
    NOVEMBER,
    OCTOBER,
    A,
    Backend,
    aborted,
    completed,
    invoice,
    new_report,
    record,
    reply_body,
)

LEGACY_AT = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
DONE = report_id(OCTOBER.period_id, 1)
"""Revision 1 of October: completed, every service answered, every row sent."""
FAILED = report_id(NOVEMBER.period_id, 1)
"""Revision 1 of November: aborted (storage answered garbage), its ReportAborted still unsent."""
COMPUTE_CHUNKS = [
    reply_body("compute", 0, [record("acct-1"), record("acct-2")], last=False),
    reply_body("compute", 1, [record("acct-3")]),
]
GARBAGE = "<html>502 Bad Gateway</html>"


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).with_name("migrations")))
    return ScriptDirectory.from_config(config).get_current_head()


async def insert(connection: AsyncConnection, table: str, **values: Any) -> None:
    """Plain SQL, as the old code left rows: datetimes and JSON bound with their column's type."""
    statement = text(
        f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})"
    )
    for name, value in values.items():
        if isinstance(value, datetime):
            statement = statement.bindparams(bindparam(name, type_=DateTime(timezone=True)))
        elif isinstance(value, list):
            statement = statement.bindparams(bindparam(name, type_=JSON))
    await connection.execute(statement, values)


async def legacy_report(
    connection: AsyncConnection,
    rid: UUID,
    period_id: str,
    status: str,
    replies: dict[str, tuple[str, list[str]]],
) -> None:
    period = OCTOBER if period_id == OCTOBER.period_id else NOVEMBER
    await insert(
        connection,
        "reports",
        report_id=str(rid),
        period_id=period_id,
        revision=1,
        period_start=period.start,
        period_end=period.end,
        status=status,
        services=list(replies),
        requested=list(replies),
        created_at=LEGACY_AT,
        updated_at=LEGACY_AT,
    )
    for service, (state, raw) in replies.items():
        await insert(
            connection,
            "service_replies",
            report_id=str(rid),
            service=service,
            request_id=f"req-{service}",
            state=state,
            records=sum(len(json.loads(body)["records"]) for body in raw if state == "ok"),
            raw=raw,
            stored_at=LEGACY_AT,
        )


async def outbox_row(
    connection: AsyncConnection, rid: UUID, message_id: str, message_type: str, body: str, sent: bool
) -> None:
    invoice_row = message_type == "InvoiceIssued"
    await insert(
        connection,
        "outbox",
        report_id=str(rid),
        message_id=message_id,
        exchange="invoices" if invoice_row else "reports",
        routing_key={"InvoiceIssued": "invoice.issued", "ReportCompleted": "report.completed"}.get(
            message_type, "report.aborted"
        ),
        message_type=message_type,
        mandatory=invoice_row,
        body=body,
        created_at=LEGACY_AT,
        sent_at=LEGACY_AT if sent else None,
        attempts=1 if sent else 0,
    )


async def write_legacy_rows(connection: AsyncConnection) -> None:
    storage_body = reply_body("storage", 0, [record("acct-1", "bucket-1", "byte_seconds")])
    await legacy_report(
        connection,
        DONE,
        "2026-10",
        "completed",
        {"compute": ("ok", COMPUTE_CHUNKS), "storage": ("ok", [storage_body])},
    )
    invoices = (invoice("acct-1", "1.00"), invoice("acct-2", "2.00"))
    for issued in invoices:
        await insert(
            connection,
            "invoices",
            invoice_id=str(issued.invoice_id),
            report_id=str(DONE),
            period_id="2026-10",
            revision=1,
            account_id=issued.account_id,
            currency="EUR",
            total=str(issued.total),
            body=issued.model_dump_json(),
        )
        await outbox_row(
            connection, DONE, str(issued.invoice_id), "InvoiceIssued", issued.model_dump_json(), True
        )
    done = completed(invoices).model_dump_json()
    await outbox_row(connection, DONE, f"{DONE}/report.completed", "ReportCompleted", done, True)
    await legacy_report(
        connection,
        FAILED,
        "2026-11",
        "aborted",
        {"compute": ("ok", COMPUTE_CHUNKS), "storage": ("failed", [GARBAGE]), "network": ("not asked", [])},
    )
    gone = aborted(period=NOVEMBER).model_dump_json()
    await outbox_row(connection, FAILED, f"{FAILED}/report.aborted", "ReportAborted", gone, False)


@pytest.fixture
async def legacy(backend: Backend) -> AsyncIterator[ReportStore]:
    """A store written at revision 0001 by the old code, then upgraded to the newest revision."""
    engine = backend.engine()
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as connection:
            await write_legacy_rows(connection)
        await upgrade(engine)
        yield ReportStore(engine)
    finally:
        await engine.dispose()


async def chunk_rows(store: ReportStore, gather_id: int) -> list[tuple[Any, ...]]:
    chunks = schema.reply_chunks
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(chunks.c.service, chunks.c.seq, chunks.c.request_id, chunks.c.records, chunks.c.accepted)
            .where(chunks.c.gather_id == gather_id)
            .order_by(chunks.c.id)
        )
        return [tuple(row) for row in rows]


async def snapshot(store: ReportStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with store.engine.connect() as connection:
        for table in schema.metadata.sorted_tables:
            rows = (await connection.execute(select(table))).all()
            tables[table.name] = sorted((tuple(map(str, row)) for row in rows), key=str)
    return tables


async def test_legacy_raw_replies_move_to_gathers_chunks_and_records(legacy: ReportStore) -> None:
    gather_id = await legacy.gather_of(FAILED)
    assert gather_id is not None

    assert await legacy.reply_bodies(FAILED, "compute") == COMPUTE_CHUNKS
    assert await legacy.reply_bodies(FAILED, "storage") == [GARBAGE]
    assert await legacy.reply_bodies(FAILED, "network") == []
    assert await chunk_rows(legacy, gather_id) == [
        ("compute", 0, "req-compute", 2, True),
        ("compute", 1, "req-compute", 1, True),
        ("storage", None, "req-storage", 0, False),
    ]
    assert await legacy.record_units(gather_id) == [("compute", "vcpu_seconds", "vCPU-s", 3)]
    assert sorted(await legacy.usage_page(gather_id, "", 10)) == [
        (f"acct-{n}", "compute", "vcpu_seconds", "vCPU-s", "3600") for n in (1, 2, 3)
    ]
    replies = await legacy.replies(FAILED)
    assert {service: (r.state, r.records) for service, r in replies.items()} == {
        "compute": ("ok", 3),
        "network": (NOT_ASKED, 0),
        "storage": ("failed", 0),
    }


async def test_each_legacy_report_gets_a_gather_of_its_own(legacy: ReportStore) -> None:
    gathers = schema.gathers
    async with legacy.engine.connect() as connection:
        rows = (await connection.execute(select(gathers).order_by(gathers.c.report_id))).all()
        linked = (
            await connection.execute(select(schema.service_replies.c.gather_id.is_(None)).distinct())
        ).scalars()
        columns = await connection.run_sync(
            lambda sync: [c["name"] for c in inspect(sync).get_columns("service_replies")]
        )

    assert sorted(row.report_id for row in rows) == sorted([str(DONE), str(FAILED)])
    assert {(row.attempt, row.owner, row.started_at) for row in rows} == {("legacy", None, LEGACY_AT)}
    assert list(linked) == [False]
    assert "raw" not in columns
    done_gather = await legacy.gather_of(DONE)
    assert done_gather is not None
    assert await legacy.record_units(done_gather) == [
        ("compute", "vcpu_seconds", "vCPU-s", 3),
        ("storage", "byte_seconds", "vCPU-s", 1),
    ]


async def test_legacy_outbox_rows_are_ready_and_report_events_are_final(legacy: ReportStore) -> None:
    outbox = schema.outbox
    async with legacy.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(
                    outbox.c.message_type, outbox.c.ready, outbox.c.final, outbox.c.body.is_not(None)
                ).order_by(outbox.c.id)
            )
        ).all()

    assert [tuple(row) for row in rows] == [
        ("InvoiceIssued", True, False, True),
        ("InvoiceIssued", True, False, True),
        ("ReportCompleted", True, True, True),
        ("ReportAborted", True, True, True),
    ]
    [pending] = await legacy.pending()
    assert (pending.message_id, pending.final) == (f"{FAILED}/report.aborted", True)
    assert (await legacy.outbox_status()).sent == 3
    assert [i.account_id for i in await legacy.invoices(report_id=DONE)] == ["acct-1", "acct-2"]
    done = await legacy.get(DONE)
    assert done is not None and done.status is ReportStatus.COMPLETED


async def test_a_replay_reuses_a_legacy_good_answer(legacy: ReportStore) -> None:
    replay = await new_report(
        legacy, revision=2, period=NOVEMBER, requested=("storage", "network"), carried_from=FAILED
    )
    await legacy.move(replay.report_id, ReportStatus.GATHERING, LEGACY_AT, owner=A)

    gather_id = await legacy.begin_gather(
        replay.report_id,
        A,
        attempt="replay",
        at=LEGACY_AT,
        requested=("storage", "network"),
        carried=("compute",),
        carried_from=FAILED,
    )

    assert (await legacy.replies(replay.report_id))["compute"] == StoredReply(
        "compute", "req-compute", "ok", None, None, 3, carried_from=FAILED
    )
    assert await legacy.reply_bodies(replay.report_id, "compute") == COMPUTE_CHUNKS
    assert await legacy.record_units(gather_id) == [("compute", "vcpu_seconds", "vCPU-s", 3)]


async def test_migrating_a_migrated_store_again_changes_nothing(
    legacy: ReportStore, backend: Backend
) -> None:
    before = await snapshot(legacy)

    await upgrade(legacy.engine)
    reopened = await backend.open()
    try:
        after = await snapshot(reopened)
        async with reopened.engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars()
            assert list(versions) == [head_revision()]
    finally:
        await reopened.close()

    assert after == before
    assert len(before["usage_records"]) == 3 + 1 + 3


async def test_a_legacy_answer_listing_a_resource_twice_is_kept_for_the_audit_but_not_reused(
    backend: Backend,
) -> None:
    """The old store accepted it; the new one refuses it, so a replay must ask the service again."""
    repeated = [
        reply_body("compute", 0, [record("acct-1"), record("acct-2")], last=False),
        reply_body("compute", 1, [record("acct-1")]),
    ]
    engine = backend.engine()
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as connection:
            await legacy_report(connection, FAILED, "2026-11", "aborted", {"compute": ("ok", repeated)})
        await upgrade(engine)
        store = ReportStore(engine)
        gather_id = await store.gather_of(FAILED)
        assert gather_id is not None
        reply = (await store.replies(FAILED))["compute"]
        bodies = await store.reply_bodies(FAILED, "compute")
        units = await store.record_units(gather_id)
        chunks = await chunk_rows(store, gather_id)
    finally:
        await engine.dispose()

    assert (reply.state, reply.reason_code) == ("failed", "invalid_reply")
    assert reply.reason is not None and "account 'acct-1' resource 'vm-1'" in reply.reason
    assert bodies == repeated
    assert units == []
    assert [accepted for *_, accepted in chunks] == [False, False]
