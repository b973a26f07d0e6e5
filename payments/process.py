"""Running the reference payment consumer as a process: stopping it mid-work on SIGTERM, what
``/readyz`` checks and what ``/metrics`` shows (its own counters only)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from observability import logs, tracing
from observability.http import Check
from payments.consumer import PaymentConsumer
from transport.connection import connected_check

log = logging.getLogger("reckon.payments")


async def stopping() -> str:
    return "stopping"


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

    return {"broker": connected_check(connection), "consuming": consuming}


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
