"""Taking ``PeriodClosed``: one report per period, accepted before the event is acknowledged."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from accounting.amqp.topology import DeadLetters, open_coordinator_queue
from accounting.infra import metrics
from accounting.service.coordinator import Coordinator, PeriodRefused, transient
from accounting.store.repository import ReportRecord
from contracts import PeriodClosed, Topology
from observability import tracing
from transport.consumer import QueueConsumer

log = logging.getLogger("reckon.coordinator")

ACCEPT_RETRY_SECONDS = 60.0
"""How long a PeriodClosed is retried in-process before it is given back to its queue."""


def verified_requester(user_id: str, event: PeriodClosed) -> str:
    """Who closed the period: the broker-verified sender, with what the body claims as a note."""
    if event.requested_by == user_id:
        return user_id
    return f"{user_id} ({event.requested_by})"[:128]


class PeriodConsumer(QueueConsumer):
    """Consumes ``accounting.period-closed`` (single active consumer across replicas).

    An event is acknowledged once its report row is committed; the report is then built in the
    background. A repeated event for a period that has a report is acknowledged and ignored.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        channel: AbstractChannel,
        queue: AbstractQueue,
        scheduler_user: str | None = None,
    ) -> None:
        super().__init__(channel, queue)
        self._coordinator = coordinator
        self.scheduler_user = scheduler_user
        """The broker user PeriodClosed must come from; None: anyone (development)."""
        self.refused = 0
        """PeriodClosed events refused (invalid, or from another broker user) and dead-lettered."""
        self.accept_retry_seconds = ACCEPT_RETRY_SECONDS
        self.handled = 0
        """PeriodClosed events acknowledged, duplicates included."""

    @classmethod
    async def start(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        coordinator: Coordinator,
        scheduler_user: str | None = None,
        dead_letters: DeadLetters = "arguments",
    ) -> PeriodConsumer:
        channel, queue = await open_coordinator_queue(
            connection, topology, topology.period_closed_queue, prefetch=1, dead_letters=dead_letters
        )
        if scheduler_user is None:
            log.warning(
                "scheduler_user is unset: PeriodClosed is taken from any broker user (development only)"
            )
        consumer = cls(coordinator, channel, queue, scheduler_user)
        await consumer.begin()
        return consumer

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.scheduler_user is not None and message.user_id != self.scheduler_user:
            # The broker verified user_id against the sender's connection: this is who sent it.
            await self._refuse(
                message,
                "sender",
                f"a PeriodClosed from broker user {message.user_id!r}: only {self.scheduler_user!r} "
                "closes periods",
            )
            return
        try:
            event = PeriodClosed.from_json(message.body)
        except ValidationError as error:
            await self._refuse(message, "invalid", f"an invalid PeriodClosed: {error}")
            return
        if message.user_id:
            event = event.model_copy(update={"requested_by": verified_requester(message.user_id, event)})
        try:
            record = await self._accept(event)
        except PeriodRefused as refused:
            await self._refuse(message, "calendar", f"a PeriodClosed the billing calendar refuses: {refused}")
            return
        except Exception:
            log.exception("period %s: could not store its report; the event is requeued", event.period_id)
            await message.nack(requeue=True)
            return
        await message.ack()
        self.handled += 1
        if record is not None:
            # The build (a task of its own) inherits the event's trace context (``traceparent``).
            with tracing.traced(tracing.from_headers(message.headers)):
                self._coordinator.start_building(record)

    async def _refuse(self, message: AbstractIncomingMessage, reason: str, why: str) -> None:
        """Dead-letter the message without creating a report, so it never blocks the real close."""
        self.refused += 1
        metrics.PERIODS_REFUSED.labels(reason).inc()
        log.error("refused %s (parked in dead letters; no report made)", why)
        await message.reject(requeue=False)

    async def _accept(self, event: PeriodClosed) -> ReportRecord | None:
        """Store the report, retrying in this process while the store is briefly unreachable: the
        event is given back to the queue (and counts towards its delivery limit) only after that."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(transient),
            stop=stop_after_delay(self.accept_retry_seconds),
            wait=wait_exponential_jitter(multiplier=0.2, max=5),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "period %s: the store did not take its report (%s); retrying",
                event.period_id,
                state.outcome.exception() if state.outcome else "?",
            ),
        ):
            with attempt:
                return await self._coordinator.accept(event)
        raise AssertionError("unreachable: the retry loop returns or raises")
