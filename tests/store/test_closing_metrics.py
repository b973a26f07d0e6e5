"""Did this month close? What ``/metrics`` reads from the store at scrape time — the newest report
completed and aborted, the drafts awaiting approval, the age of the relay's backlog — and the
relay's lag, from each outbox row made ready to it confirmed. A real operations server on both
store backends: the coordinator and the standalone relay show the same (``watch_outbox``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import Numbering
from accounting.infra import metrics
from accounting.runtime.ops import watch_outbox
from accounting.service.relay import OutboxRelay
from accounting.store import schema
from accounting.store.repository import ReportRecord, ReportStore
from contracts import InvoiceIssued, Period
from observability.http import HttpSettings, OpsServer
from tests.store.support import (
    NOVEMBER,
    OCTOBER,
    A,
    aborted,
    aborted_report,
    completed,
    invoice,
    minutes,
    new_report,
    priced_report,
    publishing_report,
    staged,
)
from tests.store.test_relay import FakePublisher

NUMBERING = Numbering()
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def server(store: ReportStore) -> AsyncIterator[OpsServer]:
    """An operations server whose scrapes read ``store``, as ``reckon relay`` and the coordinator do."""
    metrics.REPORT_LAST_FINISHED.clear()  # a series of an earlier test's store must not show
    started = OpsServer()
    await started.start(HttpSettings(0, "127.0.0.1"))
    watch_outbox(started, store, [])
    try:
        yield started
    finally:
        await started.stop()


async def scrape(server: OpsServer) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("reckon_")
    }


def last_finished(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "reckon_report_last_completed_timestamp_seconds"
    }


def lag(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"reckon_relay_lag_seconds_{name}", labels) or 0.0


async def priced_at(
    store: ReportStore, at: datetime, *, accounts: int = 2, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...]]:
    """A report priced at ``at``: in PRICING, its invoices staged (not ready)."""
    record = await new_report(store, period=period, at=at, lease_until=at + timedelta(hours=1))
    for status in (ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING):
        await store.move(record.report_id, status, at, owner=A)
    invoices = tuple(invoice(f"acct-{n}", f"{n}.00", period=period) for n in range(1, accounts + 1))
    await store.stage_invoices(
        record.report_id,
        A,
        period_id=period.period_id,
        revision=1,
        currency="EUR",
        invoices=staged(invoices),
        at=at,
    )
    return record, invoices


async def ready_times(store: ReportStore, report: UUID) -> list[tuple[bool, datetime | None]]:
    outbox = schema.outbox
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.ready, outbox.c.ready_at)
            .where(outbox.c.report_id == str(report))
            .order_by(outbox.c.id)
        )
        return [(row.ready, row.ready_at) for row in rows]


# --- the store --------------------------------------------------------------------------------------


async def test_a_row_is_ready_from_when_its_report_is_issued_not_from_when_it_was_written(
    store: ReportStore,
) -> None:
    record, _, done = await priced_report(store, accounts=2)  # staged at 9
    assert await ready_times(store, record.report_id) == [(False, None), (False, None)]

    await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=A, numbering=None)
    assert await ready_times(store, record.report_id) == [(False, None)] * 3  # a draft: nothing ready

    await store.approve(record.report_id, "alice", minutes(600), NUMBERING)
    assert await ready_times(store, record.report_id) == [(True, minutes(600))] * 3
    assert [row.ready_at for row in await store.pending()] == [minutes(600)] * 3
    assert (await store.outbox_status()).oldest_pending_at == minutes(600)  # not 9, when it was priced

    gone = await aborted_report(store, period=NOVEMBER)  # ReportAborted is written ready
    assert await ready_times(store, gone.report_id) == [(True, minutes(3))]


async def test_reports_status_is_the_newest_final_transition_of_each_outcome_and_the_drafts(
    store: ReportStore,
) -> None:
    empty = await store.reports_status()
    assert (dict(empty.last_final_at), empty.awaiting_approval) == ({}, 0)

    first = await aborted_report(store, period=NOVEMBER)  # aborted at 3
    await store.release(first.report_id, minutes(40))  # its row changes later; its abort does not
    record, _, _ = await publishing_report(store)
    rows = [row for row in await store.pending() if row.report_id == record.report_id]
    assert await store.mark_sent(rows, minutes(20)) == [record.report_id]  # completed at 20
    await priced_report(store, period=Period.month("2026-09"))
    draft, _, done = await priced_report(store, period=Period.month("2026-08"))
    await store.finish_completed(draft.report_id, done, minutes(11), "priced", owner=A, numbering=None)

    status = await store.reports_status()
    assert dict(status.last_final_at) == {
        ReportStatus.ABORTED: minutes(3),
        ReportStatus.COMPLETED: minutes(20),
    }
    assert status.awaiting_approval == 1


# --- at scrape time -----------------------------------------------------------------------------------


async def test_a_scrape_shows_when_the_month_closed_what_awaits_approval_and_how_long_the_backlog_waited(
    store: ReportStore, server: OpsServer
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    empty = await scrape(server)
    assert last_finished(empty) == {}  # no report reached either outcome: no series at all
    assert empty[("reckon_reports_awaiting_approval", frozenset())] == 0
    assert empty[("reckon_outbox_oldest_pending_age_seconds", frozenset())] == 0

    # Priced three days ago, waiting for a reviewer: nothing is ready for the relay yet.
    record, invoices = await priced_at(store, now - timedelta(days=3))
    await store.finish_completed(
        record.report_id, completed(invoices), now - timedelta(days=3), "priced", owner=A, numbering=None
    )
    drafted = await scrape(server)
    assert drafted[("reckon_reports_awaiting_approval", frozenset())] == 1
    assert drafted[("reckon_outbox_staged", frozenset())] == len(invoices) + 1
    assert drafted[("reckon_outbox_oldest_pending_age_seconds", frozenset())] == 0

    # Approved an hour ago: the backlog has waited an hour, not three days.
    await store.approve(record.report_id, "alice", now - timedelta(hours=1), NUMBERING)
    approved = await scrape(server)
    assert approved[("reckon_reports_awaiting_approval", frozenset())] == 0
    assert approved[("reckon_outbox_pending", frozenset())] == len(invoices) + 1
    assert 3600 <= approved[("reckon_outbox_oldest_pending_age_seconds", frozenset())] < 3600 + 120
    assert last_finished(approved) == {}

    # The relay sends it now: each row waited an hour since it was made ready; the month closed.
    count, total, within = lag("count"), lag("sum"), lag("bucket", le="3600.0")
    below = lag("bucket", le="1800.0")
    assert await OutboxRelay(store, FakePublisher(), clock=lambda: now).flush() == len(invoices) + 1
    assert lag("count") - count == len(invoices) + 1
    assert lag("sum") - total == pytest.approx(3600 * (len(invoices) + 1))
    assert (lag("bucket", le="3600.0") - within, lag("bucket", le="1800.0") - below) == (len(invoices) + 1, 0)
    closed = await scrape(server)
    assert last_finished(closed) == {"completed": pytest.approx(now.timestamp())}
    assert closed[("reckon_outbox_oldest_pending_age_seconds", frozenset())] == 0

    # November aborted two hours ago: its own series, and its ReportAborted waits for the relay.
    gone = await new_report(store, period=NOVEMBER, at=now - timedelta(hours=3))
    await store.move(gone.report_id, ReportStatus.GATHERING, now - timedelta(hours=3), owner=A)
    await store.finish_aborted(
        gone.report_id, aborted(period=NOVEMBER), now - timedelta(hours=2), "deadline", owner=A
    )
    both = await scrape(server)
    assert last_finished(both) == {
        "completed": pytest.approx(now.timestamp()),
        "aborted": pytest.approx((now - timedelta(hours=2)).timestamp()),
    }
    assert 7200 <= both[("reckon_outbox_oldest_pending_age_seconds", frozenset())] < 7200 + 120


async def test_a_row_written_without_ready_at_counts_from_when_it_was_written(
    store: ReportStore, server: OpsServer
) -> None:
    """As the release before 0007 leaves rows: no ``ready_at`` (it knows no such column)."""
    now = datetime.now(UTC).replace(microsecond=0)
    record, invoices = await priced_at(store, now - timedelta(days=2))
    await store.finish_completed(
        record.report_id, completed(invoices), now - timedelta(days=1), "priced", owner=A, numbering=NUMBERING
    )
    async with store.engine.begin() as connection:
        await connection.execute(update(schema.outbox).values(ready_at=None))

    waited = (await scrape(server))[("reckon_outbox_oldest_pending_age_seconds", frozenset())]
    assert 2 * 86400 <= waited < 2 * 86400 + 120  # from created_at: the best it can know
    # The invoices were written when priced, ReportCompleted when issued.
    assert [row.ready_at for row in await store.pending()] == [now - timedelta(days=2)] * len(invoices) + [
        now - timedelta(days=1)
    ]

    count, total = lag("count"), lag("sum")
    await OutboxRelay(store, FakePublisher(), clock=lambda: now).flush()
    assert lag("count") - count == len(invoices) + 1
    # The relay reads when a report's rows were first made ready, once per report (not a column
    # per row on its hot path): every row of this report counts from its earliest, two days.
    assert lag("sum") - total == pytest.approx(2 * 86400 * (len(invoices) + 1))
