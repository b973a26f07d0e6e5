"""Publishing outgoing events: persistent, confirmed, retried, never silently dropped."""

from __future__ import annotations

import logging
from typing import Any, Protocol
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from accounting.amqp.topology import DeadLetters, declare_topology_for
from accounting.infra.traces import report_trace
from contracts import CONTENT_TYPE, Topology
from transport.connection import broker_user

log = logging.getLogger("reckon.publish")

RETRYABLE = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError)
PublishResult = Basic.Ack | DeliveredMessage


class Unroutable(RuntimeError):
    """The broker returned an event: no queue is bound where one must be."""


class Outgoing(Protocol):
    """An event ready to leave: what the outbox stores for each message."""

    @property
    def exchange(self) -> str: ...  # "invoices" or "reports"
    @property
    def routing_key(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def message_type(self) -> str: ...
    @property
    def mandatory(self) -> bool: ...
    @property
    def body(self) -> bytes: ...


class Publisher(Protocol):
    """Where the relay sends outbox rows: the broker, or a fake in tests."""

    async def publish(self, event: Outgoing) -> None: ...


class AmqpEventPublisher:
    """Publishes with publisher confirms; each confirm wait has its own timeout and is retried.

    A retry after a lost confirm can publish twice; ``message_id`` (the invoice id for an
    invoice) lets the consumer drop the copy.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        exchanges: dict[str, AbstractExchange],
        confirm_timeout: float,
        attempts: int = 3,
        user_id: str | None = None,
    ) -> None:
        self.user_id = user_id
        """Set on every event (the broker verifies it): a payment service can tell the coordinator's
        invoices from anything another broker user might publish."""
        self._channel = channel
        self._exchanges = exchanges
        self._confirm_timeout = confirm_timeout
        self._attempts = attempts

    @classmethod
    async def create(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        confirm_timeout: float = 10.0,
        dead_letters: DeadLetters = "arguments",
    ) -> AmqpEventPublisher:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology_for(connection, channel, topology, dead_letters)
        exchanges = {
            "invoices": await channel.get_exchange(topology.invoices.name),
            "reports": await channel.get_exchange(topology.reports.name),
        }
        return cls(channel, exchanges, confirm_timeout, user_id=broker_user(connection))

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()

    async def publish(self, event: Outgoing) -> None:
        """Return once the broker confirmed ``event``; raise if it could not, after retries."""
        exchange = self._exchanges[event.exchange]
        message = aio_pika.Message(
            event.body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.message_id,
            type=event.message_type,
            user_id=self.user_id,
            headers=_trace_headers(event),
        )
        try:  # the common case, without the retry machinery's cost per message
            returned = await exchange.publish(
                message, event.routing_key, mandatory=event.mandatory, timeout=self._confirm_timeout
            )
        except RETRYABLE:
            returned = await self._republish(exchange, message, event)
        if isinstance(returned, DeliveredMessage):
            raise Unroutable(
                f"{event.message_id}: no queue is bound to {exchange.name} for {event.routing_key}"
            )

    async def _republish(
        self, exchange: AbstractExchange, message: aio_pika.Message, event: Outgoing
    ) -> PublishResult | None:
        """The first attempt failed: try again a few times with backoff, then give up loudly."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts - 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(RETRYABLE),
            reraise=True,
        ):
            with attempt:
                log.warning(
                    "republishing %s (attempt %d)", event.message_id, attempt.retry_state.attempt_number + 1
                )
                return await exchange.publish(
                    message, event.routing_key, mandatory=event.mandatory, timeout=self._confirm_timeout
                )
        raise AssertionError("unreachable: the retry loop returns or raises")


def _trace_headers(event: Outgoing) -> dict[str, Any]:
    """``traceparent`` of the report the event belongs to (an outbox row names its report)."""
    report_id = getattr(event, "report_id", None)
    return report_trace(report_id).headers() if isinstance(report_id, UUID) else {}
