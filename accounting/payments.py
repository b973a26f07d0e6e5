"""A reference payment-service consumer: takes InvoiceIssued, drops duplicates by invoice_id."""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from accounting.broker import declare_coordinator_topology
from contracts import InvoiceIssued, Topology

log = logging.getLogger("reckon.payments")

InvoiceCallback = Callable[[InvoiceIssued], None]


class PaymentConsumer:
    """Consumes ``payments.invoices``. Every invoice is handled once, however often it is delivered.

    The seen-set lives in memory here; a real payment service keeps it in its own database, in
    the same transaction as the payment it creates.
    """

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, on_invoice: InvoiceCallback) -> None:
        self._channel = channel
        self._queue = queue
        self._on_invoice = on_invoice
        self._tag: str | None = None
        self.invoices: dict[UUID, InvoiceIssued] = {}
        self.duplicates = 0
        self.rejected = 0

    @classmethod
    async def start(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        on_invoice: InvoiceCallback = lambda _invoice: None,
    ) -> PaymentConsumer:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=50)
        await declare_coordinator_topology(channel, topology)
        queue = await channel.get_queue(topology.payments_queue.name)
        consumer = cls(channel, queue, on_invoice)
        consumer._tag = await queue.consume(consumer.on_message)
        return consumer

    async def stop(self) -> None:
        if self._tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._tag)
        self._tag = None
        if not self._channel.is_closed:
            await self._channel.close()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            invoice = InvoiceIssued.from_json(message.body)
        except ValidationError as error:
            self.rejected += 1
            log.error(
                "rejected an invalid InvoiceIssued %s (parked in dead letters): %s", message.message_id, error
            )
            await message.reject(requeue=False)
            return
        if invoice.invoice_id in self.invoices:
            self.duplicates += 1
            log.info("duplicate invoice %s dropped", invoice.invoice_id)
        else:
            self.invoices[invoice.invoice_id] = invoice
            try:
                self._on_invoice(invoice)
            except Exception:
                log.exception("invoice %s: handler failed", invoice.invoice_id)
        await message.ack()
