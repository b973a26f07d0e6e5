"""The outbox relay over a real store (both backends), with a publisher that fails like a broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import pytest

from accounting.amqp.publisher import Outgoing, Unroutable
from accounting.core.lifecycle import ReportStatus
from accounting.service.relay import OutboxRelay
from accounting.store.repository import OutboxRow, ReportStore
from contracts import Period
from tests.integration.support import eventually, json_logs
from tests.store.support import NOVEMBER, OCTOBER, minutes, publishing_report, status


@dataclass
class FakePublisher:
    """Confirms every event, except: the next ``lost`` calls lose the connection, events whose
    message id is in ``failing`` time out, those in ``unroutable`` come back from the broker, and
    those in ``broken`` raise an error no broker client is expected to raise."""

    lost: int = 0
    failing: set[str] = field(default_factory=set)
    unroutable: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)
    confirmed: list[str] = field(default_factory=list)
    on_publish: Callable[[], None] | None = None

    async def publish(self, event: Outgoing) -> None:
        await asyncio.sleep(0)  # a confirm is never immediate: let the other publishes interleave
        if self.on_publish is not None:
            self.on_publish()
        if self.lost:
            self.lost -= 1
            raise ConnectionError("connection reset by peer")
        if event.message_id in self.failing:
            raise TimeoutError(f"{event.message_id}: no confirm within 10s")
        if event.message_id in self.unroutable:
            raise Unroutable(f"{event.message_id}: no queue is bound")
        if event.message_id in self.broken:
            raise RuntimeError(f"{event.message_id}: channel in an unexpected state")
        self.confirmed.append(event.message_id)


def relay(
    store: ReportStore,
    publisher: FakePublisher,
    *,
    window: int = 500,
    mark_every: int = 100,
    at: float = 20,
) -> OutboxRelay:
    """A relay whose clock stands still at ``minutes(at)``: its claims never run out by themselves."""
    return OutboxRelay(
        store, publisher, clock=lambda: minutes(at), poll_seconds=0.05, window=window, mark_every=mark_every
    )


def completed_id(report: UUID) -> str:
    return f"{report}/report.completed"


async def wait_for_status(store: ReportStore, report: UUID, wanted: ReportStatus) -> None:
    async def reached() -> None:
        while await status(store, report) is not wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reached(), timeout=30)


async def test_a_large_report_is_published_in_windows_with_report_completed_last(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, invoices, _ = await publishing_report(store, accounts=1200)
    publisher = FakePublisher()
    sender = OutboxRelay(store, publisher, clock=lambda: minutes(20), window=500, mark_every=100)
    windows: list[int] = []
    marks: list[int] = []
    claim_window, mark_sent = store.claim_window, store.mark_sent

    async def counted_claim(now: datetime, until: datetime, limit: int = 500) -> list[OutboxRow]:
        rows = await claim_window(now, until, limit)
        windows.append(len(rows))
        return rows

    async def counted_mark(rows: Sequence[OutboxRow], at: datetime) -> list[UUID]:
        marks.append(len(rows))
        return await mark_sent(rows, at)

    monkeypatch.setattr(store, "claim_window", counted_claim)
    monkeypatch.setattr(store, "mark_sent", counted_mark)

    assert await sender.flush() == 1201

    assert windows == [500, 500, 200, 1, 0]
    assert max(marks) == 100 and sum(marks) == 1201
    assert sorted(publisher.confirmed[:-1]) == sorted(str(i.invoice_id) for i in invoices)
    assert publisher.confirmed[-1] == completed_id(record.report_id)
    assert await status(store, record.report_id) is ReportStatus.COMPLETED
    assert (await store.outbox_status()).pending == 0
    assert sender.sent == 1201


async def test_a_failed_publish_marks_the_confirmed_rows_of_its_window_and_a_later_flush_sends_the_rest(
    store: ReportStore,
) -> None:
    record, invoices, _ = await publishing_report(store, accounts=10)
    failing = {str(invoices[2].invoice_id), str(invoices[7].invoice_id)}
    publisher = FakePublisher(failing=set(failing))
    sender = relay(store, publisher, mark_every=3)

    with pytest.raises(TimeoutError, match="no confirm"):
        await sender.flush()
    after_failure = await store.outbox_status()
    left = await store.pending()
    first_round = list(publisher.confirmed)
    publisher.failing.clear()
    assert await sender.flush() == 3

    assert sorted(first_round) == sorted(
        str(i.invoice_id) for i in invoices if str(i.invoice_id) not in failing
    )
    assert (after_failure.sent, after_failure.pending) == (8, 3)
    assert after_failure.last_error is not None and after_failure.last_error.startswith("TimeoutError")
    assert {row.message_id for row in left if not row.final} == failing
    assert {row.attempts for row in left if not row.final} == {1}
    assert sorted(publisher.confirmed[8:-1]) == sorted(failing)
    assert publisher.confirmed[-1] == completed_id(record.report_id)
    assert len(publisher.confirmed) == len(set(publisher.confirmed)) == 11
    assert await status(store, record.report_id) is ReportStatus.COMPLETED


async def test_an_unroutable_invoice_is_kept_and_does_not_stop_the_others(store: ReportStore) -> None:
    record, invoices, _ = await publishing_report(store, accounts=6)
    stuck = str(invoices[0].invoice_id)
    publisher = FakePublisher(unroutable={stuck})

    sent = await asyncio.wait_for(relay(store, publisher, window=2).flush(), timeout=10)

    outbox = await store.outbox_status()
    assert sent == 5
    assert sorted(publisher.confirmed) == sorted(str(i.invoice_id) for i in invoices[1:])
    assert (outbox.pending, outbox.last_error_message_id) == (2, stuck)
    assert outbox.last_error is not None and "no queue is bound" in outbox.last_error
    assert await status(store, record.report_id) is ReportStatus.PUBLISHING

    publisher.unroutable.clear()
    assert await relay(store, publisher, at=20.25).flush() == 0  # it waits out its backoff first
    assert await relay(store, publisher, at=21).flush() == 2
    assert publisher.confirmed[-2:] == [stuck, completed_id(record.report_id)]
    assert await status(store, record.report_id) is ReportStatus.COMPLETED


async def test_every_line_the_relay_logs_about_a_report_carries_its_report_and_trace_ids(
    store: ReportStore,
) -> None:
    october, invoices, _ = await publishing_report(store, accounts=3)
    november, _, _ = await publishing_report(store, accounts=2, period=NOVEMBER)
    stuck = str(invoices[0].invoice_id)
    publisher = FakePublisher(
        unroutable={stuck},
        on_publish=lambda: logging.getLogger("reckon.publish").warning("republishing (attempt 2)"),
    )

    with json_logs() as logged:
        await relay(store, publisher).flush()
        publisher.unroutable.clear()
        await relay(store, publisher, at=21).flush()

    relayed = logged.of("reckon.relay")
    assert [line["event"] for line in relayed] == [
        f"outbox {stuck} of report {october.report_id} not delivered: {stuck}: no queue is bound",
        f"report {november.report_id} completed: every event confirmed",
        f"report {october.report_id} completed: every event confirmed",
    ]
    assert [line["level"] for line in relayed] == ["error", "info", "info"]
    assert [line["report_id"] for line in relayed] == [
        str(october.report_id),
        str(november.report_id),
        str(october.report_id),
    ]
    # What the publisher logs while it sends a row is that row's report's too.
    published = logged.of("reckon.publish")
    assert len(published) == len(publisher.confirmed) + 1
    assert {line["report_id"] for line in published} == {str(october.report_id), str(november.report_id)}
    for line in [*relayed, *published]:
        assert line["trace_id"] == UUID(line["report_id"]).hex


async def test_an_unexpected_publish_error_still_marks_the_confirmed_rows_of_its_window(
    store: ReportStore,
) -> None:
    record, invoices, _ = await publishing_report(store, accounts=4)
    broken = str(invoices[1].invoice_id)
    publisher = FakePublisher(broken={broken})

    with pytest.raises(RuntimeError, match="unexpected state"):
        await relay(store, publisher).flush()

    outbox = await store.outbox_status()
    assert (outbox.sent, outbox.pending, outbox.last_error_message_id) == (3, 2, broken)
    publisher.broken.clear()
    assert await relay(store, publisher).flush() == 2
    assert len(publisher.confirmed) == len(set(publisher.confirmed)) == 5
    assert await status(store, record.report_id) is ReportStatus.COMPLETED


async def test_a_flush_until_a_past_moment_sends_nothing(store: ReportStore) -> None:
    await publishing_report(store)
    publisher = FakePublisher()

    assert await relay(store, publisher).flush(until=minutes(19)) == 0

    assert publisher.confirmed == []
    assert len(await store.claim_window(minutes(20), minutes(21))) == 2


async def test_two_relays_flushing_at_once_send_every_row_and_each_report_completed_last(
    store: ReportStore,
) -> None:
    reports = {}
    for period in (OCTOBER, NOVEMBER, Period.month("2026-12")):
        record, invoices, _ = await publishing_report(store, accounts=60, period=period)
        reports[completed_id(record.report_id)] = {str(i.invoice_id) for i in invoices}
    log: list[str] = []
    publishers = [FakePublisher(confirmed=log), FakePublisher(confirmed=log)]

    sent = await asyncio.gather(
        *(relay(store, publisher, window=25, mark_every=10).flush() for publisher in publishers)
    )

    assert sum(sent) == len(log)
    assert set(log) == set(reports) | set().union(*reports.values())
    for final, invoice_ids in reports.items():
        assert log.index(final) > max(log.index(message_id) for message_id in invoice_ids)
        assert log.count(final) == 1
    assert (await store.outbox_status()).pending == 0
    assert all(r.status is ReportStatus.COMPLETED for r in await store.list_reports())


async def test_run_keeps_relaying_after_the_publisher_failed(store: ReportStore) -> None:
    record, _, _ = await publishing_report(store, accounts=3)
    failures_seen: list[int] = []
    publisher = FakePublisher(lost=3)
    sender = OutboxRelay(store, publisher, clock=lambda: datetime.now(UTC), poll_seconds=0.05)
    publisher.on_publish = lambda: failures_seen.append(sender.health.failures)
    stop = asyncio.Event()

    running = asyncio.create_task(sender.run(stop))
    await wait_for_status(store, record.report_id, ReportStatus.COMPLETED)
    # The window that completed the report is committed before the relay counts it as a good
    # round (health.ok()): wait for that, do not read it at the same instant.
    await eventually(lambda: sender.health.failures == 0, timeout=10)
    healthy = (sender.health.running, sender.health.failures)
    stop.set()
    await asyncio.wait_for(running, timeout=10)

    assert max(failures_seen) >= 1
    assert sender.health.restarts >= 1
    assert sender.health.last_error is not None and sender.health.last_error.startswith("ConnectionError")
    assert healthy == (True, 0)
    assert sender.health.running is False
    assert (publisher.lost, len(publisher.confirmed), sender.sent) == (0, 4, 4)
    assert (await store.outbox_status()).pending == 0


async def test_run_relays_rows_written_after_it_started(store: ReportStore) -> None:
    publisher = FakePublisher()
    sender = OutboxRelay(store, publisher, clock=lambda: datetime.now(UTC), poll_seconds=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))

    record, _, _ = await publishing_report(store, accounts=2)
    sender.wake()
    await wait_for_status(store, record.report_id, ReportStatus.COMPLETED)
    stop.set()
    await asyncio.wait_for(running, timeout=10)

    assert publisher.confirmed[-1] == completed_id(record.report_id)
    assert len(publisher.confirmed) == 3
