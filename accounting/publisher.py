"""Publishing invoices and report events: persistent, confirmed, retried, never silently dropped."""

from __future__ import annotations

import logging
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import DeliveredMessage
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from accounting.broker import declare_coordinator_topology
from contracts import (
    CONTENT_TYPE,
    ROUTING_INVOICE_ISSUED,
    ROUTING_REPORT_ABORTED,
    ROUTING_REPORT_COMPLETED,
    InvoiceIssued,
    Message,
    ReportAborted,
    ReportCompleted,
    Topology,
)

log = logging.getLogger("reckon.publish")

RETRYABLE = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError)


class Unroutable(RuntimeError):
    """The broker returned an event: no queue is bound where one must be."""


class EventPublisher(Protocol):
    """Where the coordinator's outgoing events go: the broker, or (later) an outbox."""

    async def publish_invoice(self, invoice: InvoiceIssued) -> None: ...

    async def publish_report(self, report: ReportCompleted | ReportAborted) -> None: ...


class AmqpEventPublisher:
    """Publishes with publisher confirms; each confirm wait has its own timeout and is retried.

    A retry after a lost confirm can publish twice; ``message_id`` (the invoice id) lets the
    payment service drop the copy.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        invoices: AbstractExchange,
        reports: AbstractExchange,
        confirm_timeout: float,
        attempts: int = 5,
    ) -> None:
        self._channel = channel
        self._invoices = invoices
        self._reports = reports
        self._confirm_timeout = confirm_timeout
        self._attempts = attempts

    @classmethod
    async def create(
        cls, connection: AbstractConnection, topology: Topology, confirm_timeout: float = 10.0
    ) -> AmqpEventPublisher:
        channel = await connection.channel(publisher_confirms=True)
        await declare_coordinator_topology(channel, topology)
        invoices = await channel.get_exchange(topology.invoices.name)
        reports = await channel.get_exchange(topology.reports.name)
        return cls(channel, invoices, reports, confirm_timeout)

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()

    async def publish_invoice(self, invoice: InvoiceIssued) -> None:
        await self._publish(
            self._invoices, ROUTING_INVOICE_ISSUED, invoice, str(invoice.invoice_id), mandatory=True
        )

    async def publish_report(self, report: ReportCompleted | ReportAborted) -> None:
        key = ROUTING_REPORT_COMPLETED if isinstance(report, ReportCompleted) else ROUTING_REPORT_ABORTED
        # Nobody has to listen to report events, so an unrouted one is fine.
        await self._publish(self._reports, key, report, f"{report.report_id}/{key}", mandatory=False)

    async def _publish(
        self, exchange: AbstractExchange, routing_key: str, body: Message, message_id: str, mandatory: bool
    ) -> None:
        message = aio_pika.Message(
            body.to_json(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            type=type(body).__name__,
        )
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(RETRYABLE),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning(
                        "republishing %s (attempt %d)", message_id, attempt.retry_state.attempt_number
                    )
                returned = await exchange.publish(
                    message, routing_key, mandatory=mandatory, timeout=self._confirm_timeout
                )
                if isinstance(returned, DeliveredMessage):
                    raise Unroutable(f"{message_id}: no queue is bound to {exchange.name} for {routing_key}")
