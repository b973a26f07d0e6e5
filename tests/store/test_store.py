"""The accounting store (``ReportStore``), every test on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from accounting.core.lifecycle import IllegalTransition, ReportStatus, Transition
from accounting.store import migrate
from accounting.store.migrate import upgrade
from accounting.store.repository import (
    OutboxCounts,
    OutboxRow,
    ReportExists,
    ReportRecord,
    ReportStore,
    StoredReply,
)
from accounting.store.schema import outbox
from contracts import (
    InvoiceIssued,
    Period,
    ReportAborted,
    ReportCompleted,
    report_id,
)
from tests.store.conftest import OCTOBER, T0, Backend, aborted, completed, invoice, minutes

NOVEMBER = Period.month("2026-11")
ACTIVE = [ReportStatus.PENDING, ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING]
PATH = {
    ReportStatus.PENDING: [],
    ReportStatus.GATHERING: [ReportStatus.GATHERING],
    ReportStatus.NORMALIZING: [ReportStatus.GATHERING, ReportStatus.NORMALIZING],
    ReportStatus.PRICING: [ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING],
}
"""How a new (PENDING) report reaches each active status."""


def is_utc(moment: datetime | None) -> bool:
    return moment is not None and moment.tzinfo is UTC


async def new_report(
    store: ReportStore,
    *,
    revision: int = 1,
    period: Period = OCTOBER,
    at: datetime = T0,
    owner: str | None = "coordinator-a",
    lease_until: datetime | None = None,
) -> ReportRecord:
    return await store.create_report(
        report_id=report_id(period.period_id, revision),
        period=period,
        revision=revision,
        services=("compute", "storage"),
        requested=("compute", "storage"),
        at=at,
        reason="PeriodClosed from scheduler",
        owner=owner,
        lease_until=lease_until,
    )


async def advance(store: ReportStore, rid: UUID, to: ReportStatus) -> None:
    """Move a PENDING report along the happy path up to ``to`` (an active status)."""
    for step, status in enumerate(PATH[to], start=1):
        await store.move(rid, status, minutes(step), f"to {status}")


async def priced_report(
    store: ReportStore, *, revision: int = 1, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...], ReportCompleted]:
    """A report in PRICING with two invoices and its ReportCompleted ready to be finished."""
    record = await new_report(store, revision=revision, period=period)
    await advance(store, record.report_id, ReportStatus.PRICING)
    invoices = (
        invoice("acct-0001", "1234.5600", revision=revision, period=period),
        invoice("acct-0002", "0.10", revision=revision, period=period),
    )
    return record, invoices, completed(invoices, revision=revision, period=period)


async def publishing_report(
    store: ReportStore, *, revision: int = 1, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...], ReportCompleted]:
    """A finished report in PUBLISHING: two invoice rows and one ReportCompleted row in the outbox."""
    record, invoices, done = await priced_report(store, revision=revision, period=period)
    await store.finish_completed(record.report_id, invoices, done, minutes(10), "priced")
    return record, invoices, done


async def status(store: ReportStore, rid: UUID) -> ReportStatus:
    record = await store.get(rid)
    assert record is not None
    return record.status


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).with_name("migrations")))
    return ScriptDirectory.from_config(config).get_current_head()


# --- migrations ----------------------------------------------------------------------------------


async def test_migrating_an_already_migrated_database_again_changes_nothing(
    store: ReportStore, backend: Backend
) -> None:
    record = await new_report(store)

    await upgrade(store.engine)
    reopened = await backend.open()
    try:
        assert await reopened.get(record.report_id) == record
        async with reopened.engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars()
            assert list(versions) == [head_revision()]
    finally:
        await reopened.close()


# --- reports -------------------------------------------------------------------------------------


async def test_create_report_round_trips_every_field_with_utc_times(store: ReportStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    rid, carried, superseded = report_id("2026-10", 2), uuid4(), report_id("2026-10", 1)
    created = await store.create_report(
        report_id=rid,
        period=OCTOBER,
        revision=2,
        services=("compute", "storage", "network"),
        requested=("storage",),
        at=datetime(2026, 11, 1, 2, 5, 0, 123456, tzinfo=plus_two),
        reason="replay",
        owner="coordinator-a",
        lease_until=datetime(2026, 11, 1, 2, 35, 0, 999999, tzinfo=plus_two),
        carried_from=carried,
        supersedes=superseded,
    )

    assert created == ReportRecord(
        report_id=rid,
        period=OCTOBER,
        revision=2,
        status=ReportStatus.PENDING,
        services=("compute", "storage", "network"),
        requested=("storage",),
        carried_from=carried,
        supersedes=superseded,
        currency=None,
        total=None,
        rate_card=None,
        owner="coordinator-a",
        lease_until=datetime(2026, 11, 1, 0, 35, 0, 999999, tzinfo=UTC),
        created_at=datetime(2026, 11, 1, 0, 5, 0, 123456, tzinfo=UTC),
        updated_at=datetime(2026, 11, 1, 0, 5, 0, 123456, tzinfo=UTC),
    )
    assert await store.get(rid) == created
    assert await store.latest("2026-10") == created
    times = [
        created.period.start,
        created.period.end,
        created.lease_until,
        created.created_at,
        created.updated_at,
    ]
    assert all(is_utc(moment) for moment in times)


async def test_get_and_latest_of_unknown_reports_are_none(store: ReportStore) -> None:
    assert await store.get(uuid4()) is None
    assert await store.latest("2026-10") is None
    assert await store.latest_completed("2026-10") is None


async def test_a_naive_datetime_is_refused(store: ReportStore) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await new_report(store, at=datetime(2026, 11, 1))

    assert await store.list_reports() == []


async def test_a_second_report_for_the_same_period_and_revision_raises_report_exists(
    store: ReportStore,
) -> None:
    first = await new_report(store)

    with pytest.raises(ReportExists, match="2026-10 already has revision 1"):
        await store.create_report(
            report_id=uuid4(),
            period=OCTOBER,
            revision=1,
            services=("compute",),
            requested=("compute",),
            at=minutes(1),
            reason="duplicate PeriodClosed",
        )

    assert await store.list_reports() == [first]
    assert await store.history(first.report_id) == [
        Transition(ReportStatus.PENDING, T0, "PeriodClosed from scheduler")
    ]


async def test_revision_two_of_a_period_is_allowed_and_is_the_latest(store: ReportStore) -> None:
    await new_report(store, revision=1)
    second = await new_report(store, revision=2, at=minutes(1))

    assert await store.latest("2026-10") == second


async def test_list_reports_orders_by_period_then_revision(store: ReportStore) -> None:
    await new_report(store, period=NOVEMBER, revision=1)
    await new_report(store, period=OCTOBER, revision=2)
    await new_report(store, period=NOVEMBER, revision=2)
    await new_report(store, period=OCTOBER, revision=1)

    listed = [(r.period.period_id, r.revision) for r in await store.list_reports()]
    october = [(r.period.period_id, r.revision) for r in await store.list_reports("2026-10")]

    assert listed == [("2026-10", 1), ("2026-10", 2), ("2026-11", 1), ("2026-11", 2)]
    assert october == [("2026-10", 1), ("2026-10", 2)]


async def test_ten_concurrent_creates_of_one_revision_admit_exactly_one(store: ReportStore) -> None:
    async def create(n: int) -> ReportRecord:
        return await store.create_report(
            report_id=uuid4(),
            period=OCTOBER,
            revision=1,
            services=("compute",),
            requested=("compute",),
            at=minutes(n),
            reason=f"PeriodClosed #{n}",
        )

    outcomes = await asyncio.gather(*(create(n) for n in range(10)), return_exceptions=True)

    winners = [o for o in outcomes if isinstance(o, ReportRecord)]
    losers = [o for o in outcomes if isinstance(o, ReportExists)]
    assert (len(winners), len(losers)) == (1, 9)
    assert await store.list_reports() == winners
    assert len(await store.history(winners[0].report_id)) == 1


# --- transitions ---------------------------------------------------------------------------------


async def test_allowed_moves_are_recorded_in_order_with_reasons_and_utc_times(store: ReportStore) -> None:
    record = await new_report(store)

    await store.move(record.report_id, ReportStatus.GATHERING, minutes(1), "requests sent")
    await store.move(record.report_id, ReportStatus.NORMALIZING, minutes(2), "every service replied")
    await store.move(record.report_id, ReportStatus.PRICING, minutes(3), "normalized 42 records")

    history = await store.history(record.report_id)
    assert history == [
        Transition(ReportStatus.PENDING, T0, "PeriodClosed from scheduler"),
        Transition(ReportStatus.GATHERING, minutes(1), "requests sent"),
        Transition(ReportStatus.NORMALIZING, minutes(2), "every service replied"),
        Transition(ReportStatus.PRICING, minutes(3), "normalized 42 records"),
    ]
    assert all(is_utc(t.at) for t in history)
    moved = await store.get(record.report_id)
    assert moved is not None
    assert (moved.status, moved.updated_at) == (ReportStatus.PRICING, minutes(3))


async def test_an_illegal_move_raises_and_records_nothing(store: ReportStore) -> None:
    record = await new_report(store)

    with pytest.raises(IllegalTransition, match="pending → completed is not allowed"):
        await store.move(record.report_id, ReportStatus.COMPLETED, minutes(1), "skip everything")

    assert await store.get(record.report_id) == record
    assert await store.history(record.report_id) == [
        Transition(ReportStatus.PENDING, T0, "PeriodClosed from scheduler")
    ]


async def test_moving_an_unknown_report_raises_lookup_error(store: ReportStore) -> None:
    with pytest.raises(LookupError, match="no report"):
        await store.move(uuid4(), ReportStatus.GATHERING, minutes(1))


async def test_a_move_within_the_build_sets_the_lease_and_leaving_it_clears_the_owner(
    store: ReportStore,
) -> None:
    record = await new_report(store, owner="coordinator-a", lease_until=minutes(30))

    await store.move(record.report_id, ReportStatus.GATHERING, minutes(1), lease_until=minutes(40))
    gathering = await store.get(record.report_id)
    await store.finish_aborted(record.report_id, aborted(), minutes(2), "deadline")
    ended = await store.get(record.report_id)

    assert gathering is not None and ended is not None
    assert (gathering.owner, gathering.lease_until) == ("coordinator-a", minutes(40))
    assert (ended.owner, ended.lease_until) == (None, None)


# --- raw replies ---------------------------------------------------------------------------------


def reply(
    service: str,
    state: str,
    raw: tuple[str, ...],
    *,
    reason_code: str | None = None,
    reason: str | None = None,
    carried_from: UUID | None = None,
) -> StoredReply:
    return StoredReply(
        service=service,
        request_id=f"req-{service}",
        state=state,
        reason_code=reason_code,
        reason=reason,
        records=len(raw),
        raw=raw,
        carried_from=carried_from,
    )


async def test_saved_replies_round_trip_raw_bodies_state_and_reason(store: ReportStore) -> None:
    record = await new_report(store)
    carried = uuid4()
    compute = reply(
        "compute", "complete", ('{"status":"ok","records":[]}', '{"chunk":{"seq":1,"last":true}}')
    )
    storage = reply(
        "storage",
        "failed",
        ('{"status":"error","error":{"code":"internal","message":"disk \\u00e9"}}',),
        reason_code="service_error",
        reason="internal: disk é",
        carried_from=carried,
    )

    await store.save_replies(record.report_id, [storage, compute], minutes(1))

    assert await store.replies(record.report_id) == {"compute": compute, "storage": storage}


async def test_saving_replies_again_for_a_service_replaces_only_that_service(store: ReportStore) -> None:
    record = await new_report(store)
    compute = reply("compute", "complete", ('{"n":1}',))
    await store.save_replies(
        record.report_id, [compute, reply("storage", "failed", ('{"n":2}',))], minutes(1)
    )

    storage_again = reply("storage", "complete", ('{"n":3}', '{"n":4}'))
    await store.save_replies(record.report_id, [storage_again], minutes(2))

    assert await store.replies(record.report_id) == {"compute": compute, "storage": storage_again}


# --- finishing a report --------------------------------------------------------------------------


async def test_finished_invoices_round_trip_by_report_period_and_invoice_id(store: ReportStore) -> None:
    record, invoices, _ = await publishing_report(store)
    first, second = invoices

    by_report = await store.invoices(report_id=record.report_id)
    by_period = await store.invoices(period_id="2026-10")
    by_id = await store.invoices(invoice_id=second.invoice_id)

    assert by_report == by_period == [first, second]
    assert by_id == [second]
    assert [i.model_dump_json() for i in by_report] == [i.model_dump_json() for i in invoices]
    assert [str(i.total) for i in by_report] == ["1234.5600", "0.10"]
    assert await store.invoices(period_id="2026-11") == []


async def test_finish_completed_enqueues_every_invoice_then_report_completed(store: ReportStore) -> None:
    record, invoices, done = await publishing_report(store)

    rows = await store.pending()

    assert [(r.exchange, r.routing_key, r.message_type, r.mandatory, r.message_id) for r in rows] == [
        ("invoices", "invoice.issued", "InvoiceIssued", True, str(invoices[0].invoice_id)),
        ("invoices", "invoice.issued", "InvoiceIssued", True, str(invoices[1].invoice_id)),
        ("reports", "report.completed", "ReportCompleted", False, f"{record.report_id}/report.completed"),
    ]
    assert rows[0].id < rows[1].id < rows[2].id
    assert {r.report_id for r in rows} == {record.report_id}
    assert {r.attempts for r in rows} == {0}
    assert [r.body for r in rows] == [invoices[0].to_json(), invoices[1].to_json(), done.to_json()]


async def test_finish_completed_moves_the_report_to_publishing_with_an_exact_total(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store)

    finished = await store.get(record.report_id)

    assert finished is not None
    assert (finished.status, finished.currency, finished.updated_at) == (
        ReportStatus.PUBLISHING,
        "EUR",
        minutes(10),
    )
    assert str(finished.total) == "1234.6600"
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.PUBLISHING, minutes(10), "priced"
    )


async def test_finishing_the_same_invoices_twice_raises_and_writes_nothing(store: ReportStore) -> None:
    record, invoices, done = await publishing_report(store)
    history = await store.history(record.report_id)

    with pytest.raises(IntegrityError):
        await store.finish_completed(record.report_id, invoices, done, minutes(11), "again")

    assert await store.outbox_counts() == OutboxCounts(pending=3, sent=0)
    assert await store.invoices(report_id=record.report_id) == list(invoices)
    assert await store.history(record.report_id) == history
    assert await status(store, record.report_id) == ReportStatus.PUBLISHING


async def test_finish_completed_is_all_or_nothing_when_one_invoice_id_is_taken(store: ReportStore) -> None:
    await publishing_report(store, revision=1)
    record, _, _ = await priced_report(store, revision=2)
    taken = invoice("acct-0001", "1234.5600", revision=1)
    fresh = invoice("acct-0003", "5.00", revision=2)

    with pytest.raises(IntegrityError):
        await store.finish_completed(
            record.report_id, (fresh, taken), completed((fresh,), revision=2), minutes(11), "x"
        )

    assert await store.invoices(invoice_id=fresh.invoice_id) == []
    assert await store.outbox_counts() == OutboxCounts(pending=3, sent=0)
    assert await status(store, record.report_id) == ReportStatus.PRICING


async def test_finish_completed_outside_pricing_raises_and_stores_no_invoice(store: ReportStore) -> None:
    record = await new_report(store)
    await advance(store, record.report_id, ReportStatus.GATHERING)
    invoices = (invoice("acct-0001", "1.00"),)

    with pytest.raises(IllegalTransition, match="gathering → publishing is not allowed"):
        await store.finish_completed(record.report_id, invoices, completed(invoices), minutes(5), "too early")

    assert await store.invoices(report_id=record.report_id) == []
    assert await store.outbox_counts() == OutboxCounts(pending=0, sent=0)
    assert await status(store, record.report_id) == ReportStatus.GATHERING


async def test_finish_aborted_enqueues_report_aborted_and_no_invoices(store: ReportStore) -> None:
    record = await new_report(store)
    await advance(store, record.report_id, ReportStatus.GATHERING)
    message = aborted()

    await store.finish_aborted(record.report_id, message, minutes(3), "storage: deadline")

    rows = await store.pending()
    assert rows == [
        OutboxRow(
            id=rows[0].id,
            report_id=record.report_id,
            message_id=f"{record.report_id}/report.aborted",
            exchange="reports",
            routing_key="report.aborted",
            message_type="ReportAborted",
            mandatory=False,
            body=message.to_json(),
            attempts=0,
        )
    ]
    assert ReportAborted.from_json(rows[0].body) == message
    assert await store.invoices(report_id=record.report_id) == []
    assert await status(store, record.report_id) == ReportStatus.ABORTED
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.ABORTED, minutes(3), "storage: deadline"
    )


# --- the outbox ----------------------------------------------------------------------------------


async def test_mark_sent_completes_the_report_exactly_when_its_last_row_is_sent(store: ReportStore) -> None:
    record, _, _ = await publishing_report(store)
    rows = await store.pending()

    results = [await store.mark_sent(row, minutes(20 + n)) for n, row in enumerate(rows)]

    assert results == [False, False, True]
    assert await status(store, record.report_id) == ReportStatus.COMPLETED
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.COMPLETED, minutes(22), "every invoice and the report event confirmed"
    )


async def test_outbox_counts_follow_each_mark_sent(store: ReportStore) -> None:
    await publishing_report(store)
    counts = [await store.outbox_counts()]

    for row in await store.pending():
        await store.mark_sent(row, minutes(20))
        counts.append(await store.outbox_counts())

    assert counts == [OutboxCounts(3, 0), OutboxCounts(2, 1), OutboxCounts(1, 2), OutboxCounts(0, 3)]
    assert await store.pending() == []


async def test_marking_one_reports_rows_sent_leaves_another_report_publishing(store: ReportStore) -> None:
    october, _, _ = await publishing_report(store, period=OCTOBER)
    november, _, _ = await publishing_report(store, period=NOVEMBER)

    for row in await store.pending():
        if row.report_id == october.report_id:
            await store.mark_sent(row, minutes(20))

    assert await status(store, october.report_id) == ReportStatus.COMPLETED
    assert await status(store, november.report_id) == ReportStatus.PUBLISHING
    assert {row.report_id for row in await store.pending()} == {november.report_id}


async def test_pending_returns_the_oldest_rows_first_up_to_the_limit(store: ReportStore) -> None:
    october, _, _ = await publishing_report(store, period=OCTOBER)
    await publishing_report(store, period=NOVEMBER)
    everything = await store.pending()
    await store.mark_sent(everything[0], minutes(20))

    assert len(everything) == 6
    assert [r.id for r in everything] == sorted(r.id for r in everything)
    assert [r.report_id for r in everything[:3]] == [october.report_id] * 3
    assert await store.pending(limit=2) == everything[1:3]
    assert await store.pending(limit=100) == everything[1:]


async def test_mark_failed_counts_the_attempt_and_keeps_the_row_pending(store: ReportStore) -> None:
    record, _, _ = await publishing_report(store)
    first = (await store.pending())[0]

    await store.mark_failed(first, "NO_ROUTE: payments.invoices")
    await store.mark_failed(first, "NO_ROUTE: payments.invoices")

    again = (await store.pending())[0]
    assert (again.id, again.attempts) == (first.id, 2)
    async with store.engine.connect() as connection:
        error = (
            await connection.execute(select(outbox.c.last_error).where(outbox.c.id == first.id))
        ).scalar()
    assert error == "NO_ROUTE: payments.invoices"
    assert await store.outbox_counts() == OutboxCounts(pending=3, sent=0)
    assert await status(store, record.report_id) == ReportStatus.PUBLISHING


@asynccontextmanager
async def reports_held(store: ReportStore, backend: Backend, waiters: int) -> AsyncIterator[None]:
    """Block every read of ``reports`` until ``waiters`` transactions wait for it, then let them all go.

    On PostgreSQL this starts concurrent ``mark_sent`` transactions at the same instant, the way
    relays racing on a report's last rows would. SQLite lets one writer in at a time, so there is
    nothing to line up: it holds nothing.
    """
    if backend.name != "postgresql":
        yield
        return
    async with store.engine.connect() as holder:
        await holder.execute(text("LOCK TABLE reports IN ACCESS EXCLUSIVE MODE"))
        pid = (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        yield
        for _ in range(1000):
            async with store.engine.connect() as probe:
                blocked = await probe.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                    {"pid": pid},
                )
                if blocked.scalar_one() >= waiters:
                    break
            await asyncio.sleep(0.01)
        await holder.commit()


async def test_concurrent_mark_sent_of_every_row_completes_the_report(
    store: ReportStore, backend: Backend
) -> None:
    record, _, _ = await publishing_report(store)
    rows = await store.pending()

    async with reports_held(store, backend, waiters=len(rows)):
        marking = [asyncio.create_task(store.mark_sent(row, minutes(20))) for row in rows]
    results = await asyncio.gather(*marking)

    assert await store.outbox_counts() == OutboxCounts(pending=0, sent=3)
    assert sorted(results) == [False, False, True]
    assert await status(store, record.report_id) == ReportStatus.COMPLETED


# --- outbox claims: relays in several coordinators share the rows ------------------------------


async def test_claim_pending_takes_every_unsent_row_of_the_oldest_report_in_order(store: ReportStore) -> None:
    await publishing_report(store, period=OCTOBER)
    await publishing_report(store, period=NOVEMBER)
    everything = await store.pending()

    first = await store.claim_pending(minutes(20), minutes(21), reports=1)
    second = await store.claim_pending(minutes(20), minutes(21), reports=1)

    assert first == everything[:3]
    assert second == everything[3:]
    assert await store.claim_pending(minutes(20), minutes(21)) == []
    assert await store.pending() == everything


async def test_a_claim_holds_its_rows_until_it_expires(store: ReportStore) -> None:
    await publishing_report(store)
    claimed = await store.claim_pending(minutes(20), minutes(21))

    assert await store.claim_pending(minutes(21), minutes(22)) == []
    assert await store.claim_pending(minutes(21.5), minutes(22.5)) == claimed


async def test_release_claims_hands_unsent_rows_back_at_once(store: ReportStore) -> None:
    await publishing_report(store)
    claimed = await store.claim_pending(minutes(20), minutes(21))

    await store.release_claims(claimed)

    assert await store.claim_pending(minutes(20), minutes(21)) == claimed


async def test_a_sent_row_is_never_claimed_again(store: ReportStore) -> None:
    await publishing_report(store)
    first, *rest = await store.claim_pending(minutes(20), minutes(21))
    await store.mark_sent(first, minutes(20))
    await store.release_claims([first, *rest])

    assert await store.claim_pending(minutes(30), minutes(31)) == rest


async def test_two_concurrent_relays_claim_each_row_at_most_once(store: ReportStore) -> None:
    for month in range(1, 5):
        await publishing_report(store, period=Period.month(f"2026-{month:02d}"))
    everything = await store.pending()

    by_a, by_b = await asyncio.gather(
        store.claim_pending(minutes(20), minutes(21)), store.claim_pending(minutes(20), minutes(21))
    )

    assert {r.id for r in by_a}.isdisjoint(r.id for r in by_b)
    assert sorted([*by_a, *by_b], key=lambda r: r.id) == everything


async def test_claim_pending_takes_nothing_of_a_report_while_one_of_its_rows_is_still_claimed(
    store: ReportStore,
) -> None:
    await publishing_report(store)
    _held, *rest = await store.claim_pending(minutes(20), minutes(21))
    await store.release_claims(rest)

    assert await store.claim_pending(minutes(20), minutes(21)) == []


async def test_after_a_failed_row_the_next_claim_starts_the_report_again_from_that_row(
    store: ReportStore,
) -> None:
    await publishing_report(store)
    failed, *rest = await store.claim_pending(minutes(20), minutes(21))
    await store.mark_failed(failed, "NO_ROUTE: payments.invoices")
    await store.release_claims(rest)

    again = await store.claim_pending(minutes(20), minutes(21))

    assert [row.id for row in again] == [failed.id, *(row.id for row in rest)]
    assert again[0].attempts == 1


# --- leases --------------------------------------------------------------------------------------


@pytest.mark.parametrize("active", ACTIVE, ids=[s.value for s in ACTIVE])
async def test_claim_takes_an_active_report_whose_lease_expired(
    store: ReportStore, active: ReportStatus
) -> None:
    record = await new_report(store, owner="coordinator-a", lease_until=minutes(30))
    await advance(store, record.report_id, active)

    claimed = await store.claim_abandoned("coordinator-b", minutes(31), minutes(61))

    assert [(r.report_id, r.status, r.owner, r.lease_until, r.updated_at) for r in claimed] == [
        (record.report_id, active, "coordinator-b", minutes(61), minutes(31))
    ]
    assert await store.get(record.report_id) == claimed[0]


async def test_claim_takes_an_active_report_without_an_owner(store: ReportStore) -> None:
    record = await new_report(store, owner=None, lease_until=None)

    claimed = await store.claim_abandoned("coordinator-b", minutes(1), minutes(31))

    assert [(r.report_id, r.owner, r.lease_until) for r in claimed] == [
        (record.report_id, "coordinator-b", minutes(31))
    ]


async def test_claim_leaves_a_report_whose_lease_is_still_valid(store: ReportStore) -> None:
    record = await new_report(store, owner="coordinator-a", lease_until=minutes(30))

    assert await store.claim_abandoned("coordinator-b", minutes(29), minutes(59)) == []
    assert await store.get(record.report_id) == record


async def test_claim_leaves_publishing_completed_and_aborted_reports(store: ReportStore) -> None:
    await publishing_report(store, period=OCTOBER)
    done, _, _ = await publishing_report(store, period=NOVEMBER)
    for row in await store.pending():
        if row.report_id == done.report_id:
            await store.mark_sent(row, minutes(20))
    gone = await new_report(store, period=Period.month("2026-12"))
    await store.finish_aborted(
        gone.report_id, aborted(period=Period.month("2026-12")), minutes(1), "deadline"
    )
    before = await store.list_reports()

    assert await store.claim_abandoned("coordinator-b", minutes(600), minutes(630)) == []
    assert [r.status for r in before] == [
        ReportStatus.PUBLISHING,
        ReportStatus.COMPLETED,
        ReportStatus.ABORTED,
    ]
    assert await store.list_reports() == before


async def test_two_concurrent_claimers_take_each_report_at_most_once(store: ReportStore) -> None:
    periods = [Period.month(f"2026-{month:02d}") for month in range(1, 7)]
    for period in periods:
        await new_report(store, period=period, owner="coordinator-dead", lease_until=minutes(1))

    by_b, by_c = await asyncio.gather(
        store.claim_abandoned("coordinator-b", minutes(5), minutes(35)),
        store.claim_abandoned("coordinator-c", minutes(5), minutes(35)),
    )

    ids_b, ids_c = {r.report_id for r in by_b}, {r.report_id for r in by_c}
    assert ids_b.isdisjoint(ids_c)
    assert ids_b | ids_c == {report_id(period.period_id, 1) for period in periods}
    owners = {r.report_id: r.owner for r in await store.list_reports()}
    assert all(owners[rid] == "coordinator-b" for rid in ids_b)
    assert all(owners[rid] == "coordinator-c" for rid in ids_c)


def overtaken_claimer(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch, rival: str, now: datetime, lease_until: datetime
) -> ReportStore:
    """A second store on the same database whose claim is overtaken by ``rival``'s claim.

    Between reading the active reports and trying to take them, ``rival`` claims them all: the
    interleaving two coordinators hit when they look for abandoned reports at the same time.
    """
    slow = ReportStore(store.engine)
    read_active = slow._active

    async def read_then_rival_claims(period_id: str | None = None) -> list[ReportRecord]:
        records = await read_active(period_id)
        await store.claim_abandoned(rival, now, lease_until)
        return records

    monkeypatch.setattr(slow, "_active", read_then_rival_claims)
    return slow


async def test_a_claim_overtaken_by_another_claim_takes_nothing(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await new_report(store, owner="coordinator-dead", lease_until=minutes(1))
    slow = overtaken_claimer(store, monkeypatch, "coordinator-b", minutes(5), minutes(35))

    assert await slow.claim_abandoned("coordinator-c", minutes(5), minutes(35)) == []
    claimed = await store.get(record.report_id)
    assert claimed is not None
    assert (claimed.owner, claimed.lease_until) == ("coordinator-b", minutes(35))


async def test_a_claim_overtaken_at_the_instant_of_the_last_update_takes_nothing(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await new_report(store, owner=None, lease_until=None, at=minutes(5))
    slow = overtaken_claimer(store, monkeypatch, "coordinator-b", minutes(5), minutes(35))

    assert await slow.claim_abandoned("coordinator-c", minutes(5), minutes(35)) == []
    claimed = await store.get(record.report_id)
    assert claimed is not None
    assert claimed.owner == "coordinator-b"


async def test_release_lets_the_next_claim_take_the_report_at_once(store: ReportStore) -> None:
    record = await new_report(store, owner="coordinator-a", lease_until=minutes(30))

    await store.release(record.report_id, minutes(1))
    released = await store.get(record.report_id)
    claimed = await store.claim_abandoned("coordinator-b", minutes(2), minutes(32))

    assert released is not None
    assert (released.owner, released.lease_until, released.updated_at) == (None, None, minutes(1))
    assert [(r.report_id, r.owner) for r in claimed] == [(record.report_id, "coordinator-b")]


# --- which revision counts -----------------------------------------------------------------------


async def test_latest_completed_ignores_an_aborted_later_revision(store: ReportStore) -> None:
    first, _, _ = await publishing_report(store, revision=1)
    for row in await store.pending():
        await store.mark_sent(row, minutes(20))
    second = await new_report(store, revision=2, at=minutes(30))
    await store.finish_aborted(second.report_id, aborted(revision=2), minutes(31), "deadline")

    best = await store.latest_completed("2026-10")
    newest = await store.latest("2026-10")

    assert best is not None and newest is not None
    assert (best.report_id, best.status) == (first.report_id, ReportStatus.COMPLETED)
    assert (newest.report_id, newest.status) == (second.report_id, ReportStatus.ABORTED)


async def test_latest_completed_is_none_when_every_revision_aborted(store: ReportStore) -> None:
    record = await new_report(store)
    await store.finish_aborted(record.report_id, aborted(), minutes(1), "deadline")

    assert await store.latest_completed("2026-10") is None


async def test_the_rate_card_that_priced_a_revision_is_kept_with_it(store: ReportStore) -> None:
    record, invoices, done = await priced_report(store)
    card = {"currency": "EUR", "minor_units": 2, "items": {"vcpu": {"unit": "vCPU-hour"}}}

    await store.finish_completed(record.report_id, invoices, done, minutes(10), "priced", rate_card=card)

    finished = await store.get(record.report_id)
    assert finished is not None
    assert finished.rate_card == card
