"""A reference payment-service consumer: takes InvoiceIssued, drops duplicates by invoice_id."""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from accounting.broker import QueueConsumer
from contracts import InvoiceIssued, Topology

log = logging.getLogger("reckon.payments")

InvoiceCallback = Callable[[InvoiceIssued], None]


class PaymentConsumer(QueueConsumer):
    """Consumes ``payments.invoices``. Every invoice is handled once, however often it is delivered.

    The seen-set lives in memory here; a real payment service keeps it in its own database, in
    the same transaction as the payment it creates.
    """

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, on_invoice: InvoiceCallback) -> None:
        super().__init__(channel, queue)
        self._on_invoice = on_invoice
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
        channel, queue = await cls.open_queue(connection, topology, topology.payments_queue, prefetch=50)
        consumer = cls(channel, queue, on_invoice)
        await consumer.begin()
        return consumer

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
