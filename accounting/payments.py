"""A reference payment-service consumer of ``payments.invoices``, written to be copied.

Per delivery of an ``InvoiceIssued``:

1. an invalid body is rejected without requeue: the broker parks it in dead letters at once;
2. the invoice is handled and its ``invoice_id`` recorded **in one transaction** of the ledger
   (``accounting.payments_store``): the id is claimed first, then the handlers run, then it
   commits. An id already recorded is a duplicate: dropped, handlers not called;
3. only after the commit is the message acknowledged. A lost acknowledgement (crash, closed
   channel) means a redelivery, which step 2 drops as a duplicate;
4. a handler that raises rolls the transaction back — the id stays unrecorded — and the message is
   returned with ``basic.reject(requeue=True)`` to be delivered again. ``reject`` rather than
   ``nack``: on every RabbitMQ version it counts toward the quorum queue's delivery limit
   (``DELIVERY_LIMIT``, 5 redeliveries), so a poison invoice ends in ``billing.dead-letters``
   (reason ``delivery_limit``) instead of looping; the consumer counts and logs that last failure
   (``parked``). Fix the handler, then ``reckon dlq replay <invoice_id>``;
5. if the ledger's database itself fails (not a handler), the message is given back with
   ``basic.nack(requeue=True)`` after a pause (``LEDGER_RETRY_SECONDS``): an outage should not
   spend the invoice's deliveries (RabbitMQ 4.3+ does not count a nack; older versions do).

Guarantees, with a durable ``SqlLedger`` (``reckon payments --db``; survives restarts):

- ``in_transaction(invoice, tx)`` — writes through ``tx`` commit with the id: each invoice's
  effects happen **exactly once**, however often it is delivered, whatever crashes, and with
  several consumers on one database. Put the payment there.
- ``on_invoice(invoice)`` — runs inside the same transaction, before the commit, but its effects
  are outside the database: **at least once and never skipped** (a crash after it returned and
  before the commit repeats it). Make it idempotent by ``invoice_id`` if it talks to the world.

With the default ``MemoryLedger`` the same holds for one process's lifetime only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from uuid import UUID

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from accounting.broker import QueueConsumer
from accounting.payments_store import Ledger, MemoryLedger
from contracts import DELIVERY_LIMIT, InvoiceIssued, Topology

log = logging.getLogger("reckon.payments")

InvoiceCallback = Callable[[InvoiceIssued], Awaitable[None] | None]
TransactionalHandler = Callable[[InvoiceIssued, AsyncConnection], Awaitable[None]]


LEDGER_RETRY_SECONDS = 1.0
"""How long a delivery waits before it is given back when the ledger's database failed."""


class HandlerFailed(Exception):
    """A handler raised (its exception is the cause): the invoice is delivered again."""


def deliveries_before(message: AbstractIncomingMessage) -> int:
    """How many times the quorum queue delivered this message before and had it back."""
    count = (message.headers or {}).get("x-delivery-count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def is_last_delivery(message: AbstractIncomingMessage) -> bool:
    """A failure now makes the broker dead-letter the message instead of delivering it again."""
    return deliveries_before(message) >= DELIVERY_LIMIT


class PaymentConsumer(QueueConsumer):
    """Consumes ``payments.invoices``. Every invoice is handled once, however often it is delivered.

    ``invoices`` holds the invoices this instance handled; ``duplicates`` the copies it dropped;
    ``rejected`` the invalid messages it dead-lettered; ``failures`` the handler failures (each
    redelivered); ``parked`` those of them on the last delivery the queue allows;
    ``ledger_errors`` the deliveries given back because the ledger's database failed.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        on_invoice: InvoiceCallback,
        ledger: Ledger | None = None,
        in_transaction: TransactionalHandler | None = None,
        publisher: str | None = None,
    ) -> None:
        super().__init__(channel, queue)
        self.publisher = publisher
        """The broker user invoices must come from (the coordinator's); None: no check."""
        self._on_invoice = on_invoice
        self._ledger = ledger or MemoryLedger()
        self._in_transaction = in_transaction
        self.invoices: dict[UUID, InvoiceIssued] = {}
        self.duplicates = 0
        self.rejected = 0
        self.failures = 0
        self.parked = 0
        self.ledger_errors = 0

    @classmethod
    async def start(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        on_invoice: InvoiceCallback = lambda _invoice: None,
        *,
        ledger: Ledger | None = None,
        in_transaction: TransactionalHandler | None = None,
        prefetch: int = 50,
        publisher: str | None = None,
    ) -> PaymentConsumer:
        """Declare the topology and consume. ``in_transaction`` needs a SQL ledger."""
        if in_transaction is not None and (ledger is None or isinstance(ledger, MemoryLedger)):
            raise ValueError("in_transaction needs a SqlLedger: its writes commit with the invoice id")
        channel, queue = await cls.open_queue(
            connection, topology, topology.payments_queue, prefetch=prefetch
        )
        consumer = cls(channel, queue, on_invoice, ledger, in_transaction, publisher)
        await consumer.begin()
        return consumer

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.publisher is not None and message.user_id != self.publisher:
            # Any broker user that may publish to the default exchange could post here: only the
            # coordinator's invoices count (the broker verified user_id against the connection).
            self.rejected += 1
            log.error(
                "rejected message %s from broker user %r: invoices come from %r (parked in dead letters)",
                message.message_id,
                message.user_id,
                self.publisher,
            )
            await message.reject(requeue=False)
            return
        try:
            invoice = InvoiceIssued.from_json(message.body)
        except ValidationError as error:
            self.rejected += 1
            log.error(
                "rejected an invalid InvoiceIssued %s (parked in dead letters): %s", message.message_id, error
            )
            await message.reject(requeue=False)
            return
        try:
            handled = await self._ledger.handle_once(invoice, lambda tx: self._handle(invoice, tx))
        except HandlerFailed:
            await self._failed(invoice, message)
            return
        except Exception:
            # The ledger itself (its database) failed: not the invoice's fault. Give it back after a
            # pause, with nack, which RabbitMQ 4.3+ does not count toward the delivery limit.
            self.ledger_errors += 1
            log.exception("invoice %s: the ledger failed; delivered again later", invoice.invoice_id)
            await asyncio.sleep(LEDGER_RETRY_SECONDS)
            await message.nack(requeue=True)
            return
        if handled:
            self.invoices[invoice.invoice_id] = invoice
        else:
            self.duplicates += 1
            log.info("duplicate invoice %s dropped: already handled", invoice.invoice_id)
        await message.ack()

    async def _handle(self, invoice: InvoiceIssued, tx: AsyncConnection | None) -> None:
        try:
            if self._in_transaction is not None and tx is not None:
                await self._in_transaction(invoice, tx)
            result = self._on_invoice(invoice)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            raise HandlerFailed(str(error)) from error

    async def _failed(self, invoice: InvoiceIssued, message: AbstractIncomingMessage) -> None:
        self.failures += 1
        delivery = deliveries_before(message) + 1
        if is_last_delivery(message):
            self.parked += 1
            log.exception(
                "invoice %s: handler failed on delivery %d, the last the queue allows; the broker "
                "parks it in dead letters (fix the handler, then `reckon dlq replay %s`)",
                invoice.invoice_id,
                delivery,
                invoice.invoice_id,
            )
        else:
            log.exception(
                "invoice %s: handler failed on delivery %d of %d; not recorded, delivered again",
                invoice.invoice_id,
                delivery,
                DELIVERY_LIMIT + 1,
            )
        await message.reject(requeue=True)
