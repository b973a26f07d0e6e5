"""The outbox relay over a real store, with a publisher that fails the way a broker does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from accounting.core.lifecycle import ReportStatus
from accounting.publisher import Outgoing, Unroutable
from accounting.relay import OutboxRelay
from accounting.store.repository import ReportStore
from tests.store.conftest import minutes
from tests.store.test_store import publishing_report, status


@dataclass
class FlakyPublisher:
    """Confirms every event, except that the first ``lost`` calls lose the connection and events
    whose message id is in ``unroutable`` come back from the broker."""

    lost: int = 0
    unroutable: set[str] = field(default_factory=set)
    confirmed: list[str] = field(default_factory=list)

    async def publish(self, event: Outgoing) -> None:
        if self.lost:
            self.lost -= 1
            raise ConnectionError("connection reset by peer")
        if event.message_id in self.unroutable:
            raise Unroutable(f"{event.message_id}: no queue is bound")
        self.confirmed.append(event.message_id)


def relay(store: ReportStore, publisher: FlakyPublisher) -> OutboxRelay:
    return OutboxRelay(store, publisher, clock=lambda: minutes(20), poll_seconds=0.05)


async def test_flush_publishes_the_invoices_then_the_report_event_and_completes_the_report(
    store: ReportStore,
) -> None:
    record, invoices, _ = await publishing_report(store)
    publisher = FlakyPublisher()

    assert await relay(store, publisher).flush() == 3

    assert publisher.confirmed == [
        *(str(invoice.invoice_id) for invoice in invoices),
        f"{record.report_id}/report.completed",
    ]
    assert await status(store, record.report_id) is ReportStatus.COMPLETED
    assert (await store.outbox_counts()).pending == 0


async def test_a_lost_connection_is_retried_with_backoff_until_everything_is_confirmed(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store)
    publisher = FlakyPublisher(lost=2)
    stop = asyncio.Event()
    running = asyncio.create_task(relay(store, publisher).run(stop))

    async def completed() -> None:
        while await status(store, record.report_id) is not ReportStatus.COMPLETED:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(completed(), timeout=30)
    stop.set()
    await asyncio.wait_for(running, timeout=10)

    assert publisher.lost == 0
    assert len(publisher.confirmed) == 3
    assert (await store.outbox_counts()).pending == 0


async def test_an_unroutable_invoice_stays_pending_and_holds_back_the_rest_of_its_report(
    store: ReportStore,
) -> None:
    record, invoices, _ = await publishing_report(store)
    first = str(invoices[0].invoice_id)
    publisher = FlakyPublisher(unroutable={first})

    assert await relay(store, publisher).flush() == 0

    assert publisher.confirmed == []
    [stuck, *rest] = await store.pending()
    assert (stuck.message_id, stuck.attempts) == (first, 1)
    assert len(rest) == 2
    assert await status(store, record.report_id) is ReportStatus.PUBLISHING

    publisher.unroutable.clear()
    assert await relay(store, publisher).flush() == 3
    assert publisher.confirmed[0] == first


async def test_a_relay_slower_than_its_claim_renews_it_so_no_other_relay_takes_the_report(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store)
    now = [minutes(20)]
    rival_took: list[int] = []

    class SlowPublisher(FlakyPublisher):
        async def publish(self, event: Outgoing) -> None:
            now[0] += timedelta(seconds=20)  # each confirm takes 20 s of a 30 s claim
            rival_took.extend(
                row.id for row in await store.claim_pending(now[0], now[0] + timedelta(seconds=30))
            )
            await super().publish(event)

    publisher = SlowPublisher()
    slow = OutboxRelay(store, publisher, clock=lambda: now[0], claim_seconds=30)

    assert await slow.flush() == 3
    assert rival_took == []
    assert await status(store, record.report_id) is ReportStatus.COMPLETED


async def test_a_flush_with_a_time_limit_stops_between_rows_and_hands_the_rest_back(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store)
    now = [minutes(20)]

    class SlowPublisher(FlakyPublisher):
        async def publish(self, event: Outgoing) -> None:
            now[0] += timedelta(seconds=5)
            await super().publish(event)

    publisher = SlowPublisher()
    stopping = OutboxRelay(store, publisher, clock=lambda: now[0])

    assert await stopping.flush(until=minutes(20) + timedelta(seconds=8)) == 2
    [left] = await store.claim_pending(now[0], now[0] + timedelta(seconds=30))
    assert left.message_id == f"{record.report_id}/report.completed"
