"""Operating the accounting processes: what ``/readyz`` checks and what ``/metrics`` reads at
scrape time, for the coordinator, the standalone relay and the reference payment consumer; and
the payment consumer's graceful stop.

The server itself is ``observability.http``; the metrics are in ``accounting.metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from accounting import metrics
from accounting.app import CoordinatorApp
from accounting.payments import PaymentConsumer
from accounting.relay import OutboxRelay
from accounting.store.repository import ReportStore
from accounting.supervisor import TaskHealth
from contracts import Topology
from observability import logs, tracing
from observability.http import Check, OpsServer

log = logging.getLogger("reckon.ops")


def broker_check(connection: AbstractConnection) -> Check:
    async def broker() -> str | None:
        connected = getattr(connection, "connected", None)
        if connection.is_closed or (connected is not None and not connected.is_set()):
            return "not connected (reconnecting)"
        return None

    return broker


def store_check(store: ReportStore) -> Check:
    async def reachable() -> str | None:
        async with store.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return None

    return reachable


def task_check(health: TaskHealth) -> Check:
    """A supervised task is ready while it runs and its last round did not fail. For the relay,
    "stalled" means exactly that: not running, or failing (the broker or the store refusing)."""

    async def task() -> str | None:
        if not health.running:
            return "not running"
        if health.failures:
            return f"failing ({health.failures} in a row): {health.last_error}"
        return None

    return task


def coordinator_checks(app: CoordinatorApp) -> dict[str, Check]:
    """Broker connected, its queues declared and PeriodClosed consumed, store reachable, relay
    (when this coordinator relays) and the take-over loop not failing."""
    checks: dict[str, Check] = {"broker": broker_check(app.connection), "store": store_check(app.store)}

    async def period_consumer() -> str | None:
        if app.consumer is None:
            return "not consuming accounting.period-closed"
        if app.consumer.closed:
            return "its channel is closed (reopening)"
        return await task_check(app.period_consumer)()

    if app.consumer is not None:
        checks["period_consumer"] = period_consumer
    if app.settings.relay:
        checks["relay"] = task_check(app.relay.health)
    checks["resume"] = task_check(app.resumer)
    return checks


def relay_checks(connection: AbstractConnection, store: ReportStore, relay: OutboxRelay) -> dict[str, Check]:
    return {
        "broker": broker_check(connection),
        "store": store_check(store),
        "relay": task_check(relay.health),
    }


async def stopping() -> str:
    return "stopping"


def watch_outbox(server: OpsServer, store: ReportStore, tasks: Sequence[TaskHealth]) -> None:
    """At each scrape: the outbox backlog and its oldest row's age, and each task's failures."""

    async def outbox() -> None:
        status = await store.outbox_status()
        metrics.OUTBOX_PENDING.set(status.pending)
        metrics.OUTBOX_STAGED.set(status.staged)
        oldest = status.oldest_pending_at
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        metrics.OUTBOX_OLDEST_AGE.set(age)

    async def supervised() -> None:
        for health in tasks:
            metrics.TASK_FAILURES.labels(health.name).set(health.failures)

    server.before_scrape("outbox", outbox)
    server.before_scrape("tasks", supervised)


class DeadLetterCount:
    """The dead-letter queue's message count, by a passive declare on a channel of its own."""

    def __init__(self, connection: AbstractConnection, topology: Topology) -> None:
        self._connection = connection
        self._queue = topology.dead_letters_queue.name
        self._channel: AbstractChannel | None = None

    async def refresh(self) -> None:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        try:
            queue = await self._channel.declare_queue(self._queue, passive=True)
        except Exception:
            channel, self._channel = self._channel, None  # a missing queue closes the channel
            if not channel.is_closed:
                await channel.close()
            raise
        metrics.DEAD_LETTERS.set(queue.declaration_result.message_count or 0)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None


def watch_coordinator(server: OpsServer, app: CoordinatorApp) -> DeadLetterCount:
    """Readiness and scrape-time metrics of a running coordinator; close the returned counter
    when the coordinator stops."""
    server.set_checks(coordinator_checks(app))
    watch_outbox(server, app.store, app.health)
    dead_letters = DeadLetterCount(app.connection, Topology(app.settings.namespace))
    server.before_scrape("dead_letters", dead_letters.refresh)
    return dead_letters


class GracefulPaymentConsumer(PaymentConsumer):
    """The reference payment consumer, stoppable mid-work (``reckon payments`` on SIGTERM):
    ``drain`` stops taking deliveries, gives the ones being handled a grace period, and closes the
    channel, so every delivery not acknowledged goes back to its queue for the next consumer.
    A handler cut off by the grace rolls its ledger transaction back (not recorded, delivered again);
    one cut off after its commit is dropped as a duplicate when delivered again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    @classmethod
    async def begin_consuming(cls, *args: Any, **kwargs: Any) -> GracefulPaymentConsumer:
        """``PaymentConsumer.start`` (same arguments), typed as this class."""
        consumer = await cls.start(*args, **kwargs)
        assert isinstance(consumer, GracefulPaymentConsumer)
        return consumer

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.draining:
            return  # neither acknowledged nor handled: it goes back to its queue with the channel
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            # What it logs carries the document's id and the report's trace (the relay's traceparent).
            with (
                tracing.traced(tracing.from_headers(message.headers)),
                logs.bound(message_id=message.message_id),
            ):
                await super().on_message(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def drain(self, grace: float) -> None:
        self.draining = True
        running = set(self._in_flight)
        if running:
            _, unfinished = await asyncio.wait(running, timeout=grace) if grace > 0 else (set(), running)
            if unfinished:
                log.warning("%d deliveries not handled within %gs: given back", len(unfinished), grace)
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
        await self.stop()


def payments_checks(connection: AbstractConnection, consumer: GracefulPaymentConsumer) -> dict[str, Check]:
    async def consuming() -> str | None:
        if consumer.draining:
            return "stopping"
        return "its channel is closed (reopening)" if consumer.closed else None

    return {"broker": broker_check(connection), "consuming": consuming}


class PaymentMetrics(Collector):
    """The payment consumer's own counters, read at scrape time."""

    def __init__(self, consumer: PaymentConsumer) -> None:
        self._consumer = consumer

    def collect(self) -> Iterator[CounterMetricFamily]:
        consumer = self._consumer
        family = CounterMetricFamily(
            "reckon_payments_deliveries",
            "Deliveries the payment consumer settled, by outcome: invoice or credit_note (handled and "
            "recorded), duplicate (dropped), rejected (dead-lettered), handler_failed (delivered again), "
            "parked (failed on its last delivery), ledger_error (the ledger failed; delivered again)",
            labels=["outcome"],
        )
        outcomes = {
            "invoice": len(getattr(consumer, "invoices", {})),
            "credit_note": len(getattr(consumer, "credit_notes", {})),
            "duplicate": getattr(consumer, "duplicates", 0),
            "rejected": getattr(consumer, "rejected", 0),
            "handler_failed": getattr(consumer, "failures", 0),
            "parked": getattr(consumer, "parked", 0),
            "ledger_error": getattr(consumer, "ledger_errors", 0),
        }
        for outcome, count in outcomes.items():
            family.add_metric([outcome], count)
        yield family
