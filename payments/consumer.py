"""A reference payment-service consumer of ``payments.invoices`` and ``payments.corrections``,
written to be copied.

Two queues, bound deliberately: ``payments.invoices`` takes first invoices (``invoice.issued``);
``payments.corrections`` takes what a forced replay issues, in order: the ``CreditNoteIssued``
cancelling an invoice (``credit_note.issued``), then the corrected ``InvoiceIssued`` naming it in
``supersedes`` (``invoice.corrected``). The account's balance adds every invoice's total and
subtracts every credit note's, so after a correction it equals the corrected invoice. A payment
service that binds only ``invoice.issued`` never sees a correction, and so never charges twice.

Per delivery of an ``InvoiceIssued`` or ``CreditNoteIssued`` (a *document*):

1. an invalid body is rejected without requeue: the broker parks it in dead letters at once;
2. the document is handled and its id recorded **in one transaction** of the ledger
   (``payments.ledger``): the id is claimed first, then the handlers run, then it
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
from decimal import Decimal
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    DELIVERY_LIMIT,
    ROUTING_CREDIT_NOTE_ISSUED,
    ROUTING_INVOICE_CORRECTED,
    CreditNoteIssued,
    InvoiceIssued,
    Topology,
)
from payments.ledger import Document, Ledger, MemoryLedger, add_money, amount_owed, document_id
from transport.consumer import QueueConsumer
from transport.queues import declare_exchange, declare_queue

log = logging.getLogger("reckon.payments")

InvoiceCallback = Callable[[InvoiceIssued], Awaitable[None] | None]
CreditNoteCallback = Callable[[CreditNoteIssued], Awaitable[None] | None]
TransactionalHandler = Callable[[Document, AsyncConnection], Awaitable[None]]


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
    """Consumes ``payments.invoices`` and ``payments.corrections``. Every document is handled once,
    however often it is delivered.

    ``invoices`` and ``credit_notes`` hold what this instance handled; ``balances`` what each
    (account, currency) owes from them; ``duplicates`` the copies it dropped; ``rejected`` the
    invalid messages it dead-lettered; ``failures`` the handler failures (each redelivered);
    ``parked`` those of them on the last delivery the queue allows; ``ledger_errors`` the
    deliveries given back because the ledger's database failed.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        on_invoice: InvoiceCallback,
        ledger: Ledger | None = None,
        in_transaction: TransactionalHandler | None = None,
        publisher: str | None = None,
        corrections: AbstractQueue | None = None,
        on_credit_note: CreditNoteCallback | None = None,
    ) -> None:
        super().__init__(channel, queue)
        self.publisher = publisher
        """The broker user documents must come from (the coordinator's); None: no check."""
        self._on_invoice = on_invoice
        self._on_credit_note = on_credit_note
        self._ledger = ledger or MemoryLedger()
        self._in_transaction = in_transaction
        self._corrections = corrections
        self._corrections_tag: str | None = None
        self.invoices: dict[UUID, InvoiceIssued] = {}
        self.credit_notes: dict[UUID, CreditNoteIssued] = {}
        self.balances: dict[tuple[str, str], Decimal] = {}
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
        on_credit_note: CreditNoteCallback | None = None,
    ) -> PaymentConsumer:
        """Consume both queues. ``in_transaction`` needs a SQL ledger.

        The queues are the coordinator's: they are only looked up (a passive declare, which a
        broker user that may only read them is allowed). Where they do not exist yet (a fresh
        broker in development, a test) the coordinator's topology is declared, which needs a user
        allowed to configure it; in production the coordinator has declared them first.
        """
        if in_transaction is not None and (ledger is None or isinstance(ledger, MemoryLedger)):
            raise ValueError("in_transaction needs a SqlLedger: its writes commit with the document id")
        try:
            channel, queue, corrections = await _existing_queues(connection, topology, prefetch)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            channel, queue, corrections = await _declared_queues(connection, topology, prefetch)
        consumer = cls(
            channel, queue, on_invoice, ledger, in_transaction, publisher, corrections, on_credit_note
        )
        await consumer.begin()
        return consumer

    async def begin(self) -> None:
        await super().begin()
        if self._corrections is not None:
            self._corrections_tag = await self._corrections.consume(self.on_message)

    async def stop(self) -> None:
        if self._corrections is not None and self._corrections_tag is not None and not self.closed:
            await self._corrections.cancel(self._corrections_tag)
        self._corrections_tag = None
        await super().stop()

    def balance(self, account_id: str, currency: str) -> Decimal:
        """What the account owes in ``currency`` from the documents this instance handled."""
        return self.balances.get((account_id, currency), Decimal(0))

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.publisher is not None and message.user_id != self.publisher:
            # Any broker user that may publish to the default exchange could post here: only the
            # coordinator's documents count (the broker verified user_id against the connection).
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
            document = parse_document(message.routing_key, message.body)
        except (ValidationError, ValueError) as error:
            self.rejected += 1
            log.error(
                "rejected an invalid %s %s (parked in dead letters): %s",
                message.type or "message",
                message.message_id,
                error,
            )
            await message.reject(requeue=False)
            return
        try:
            handled = await self._ledger.handle_once(document, lambda tx: self._handle(document, tx))
        except HandlerFailed:
            await self._failed(document, message)
            return
        except Exception:
            # The ledger itself (its database) failed: not the document's fault. Give it back after
            # a pause, with nack, which RabbitMQ 4.3+ does not count toward the delivery limit.
            self.ledger_errors += 1
            log.exception("%s: the ledger failed; delivered again later", describe(document))
            await asyncio.sleep(LEDGER_RETRY_SECONDS)
            await message.nack(requeue=True)
            return
        if handled:
            if isinstance(document, InvoiceIssued):
                self.invoices[document.invoice_id] = document
            else:
                self.credit_notes[document.credit_note_id] = document
            owed = (document.account_id, document.currency)
            self.balances[owed] = add_money(self.balances.get(owed, Decimal(0)), amount_owed(document))
        else:
            self.duplicates += 1
            log.info("duplicate %s dropped: already handled", describe(document))
        await message.ack()

    async def _handle(self, document: Document, tx: AsyncConnection | None) -> None:
        try:
            if self._in_transaction is not None and tx is not None:
                await self._in_transaction(document, tx)
            if isinstance(document, InvoiceIssued):
                result = self._on_invoice(document)
            else:
                result = None if self._on_credit_note is None else self._on_credit_note(document)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            raise HandlerFailed(str(error)) from error

    async def _failed(self, document: Document, message: AbstractIncomingMessage) -> None:
        self.failures += 1
        delivery = deliveries_before(message) + 1
        if is_last_delivery(message):
            self.parked += 1
            log.exception(
                "%s: handler failed on delivery %d, the last the queue allows; the broker parks it in "
                "dead letters (fix the handler, then `reckon dlq replay %s`)",
                describe(document),
                delivery,
                document_id(document),
            )
        else:
            log.exception(
                "%s: handler failed on delivery %d of %d; not recorded, delivered again",
                describe(document),
                delivery,
                DELIVERY_LIMIT + 1,
            )
        await message.reject(requeue=True)


async def _existing_queues(
    connection: AbstractConnection, topology: Topology, prefetch: int
) -> tuple[AbstractChannel, AbstractQueue, AbstractQueue]:
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(topology.payments_queue.name)
        corrections = await channel.get_queue(topology.corrections_queue.name)
    except BaseException:
        if not channel.is_closed:
            await channel.close()
        raise
    return channel, queue, corrections


async def _declared_queues(
    connection: AbstractConnection, topology: Topology, prefetch: int
) -> tuple[AbstractChannel, AbstractQueue, AbstractQueue]:
    """Declare both queues as the contract describes them (with the exchanges and the dead-letter
    queue they need): what the coordinator declares at start, for a broker it has not run on yet."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    for exchange in topology.exchanges():
        await declare_exchange(channel, exchange)
    await declare_queue(channel, topology.dead_letters_queue)
    queue = await declare_queue(channel, topology.payments_queue)
    return channel, queue, await declare_queue(channel, topology.corrections_queue)


def parse_document(routing_key: str | None, body: bytes) -> Document:
    """The document a message carries, by the routing key it was published with: a credit note on
    ``credit_note.issued``, a corrected invoice on ``invoice.corrected``, else a first invoice.
    A correction on the first-invoice key (or a first invoice on the corrections key) is refused."""
    if routing_key == ROUTING_CREDIT_NOTE_ISSUED:
        return CreditNoteIssued.from_json(body)
    invoice = InvoiceIssued.from_json(body)
    correction = routing_key == ROUTING_INVOICE_CORRECTED
    if correction and invoice.supersedes is None:
        raise ValueError(f"invoice {invoice.invoice_id} on {routing_key} names no invoice it supersedes")
    if not correction and invoice.supersedes is not None:
        raise ValueError(
            f"invoice {invoice.invoice_id} supersedes {invoice.supersedes} but came as a first invoice "
            f"({routing_key}); corrections come on {ROUTING_INVOICE_CORRECTED}"
        )
    return invoice


def describe(document: Document) -> str:
    kind = "invoice" if isinstance(document, InvoiceIssued) else "credit note"
    return f"{kind} {document_id(document)}"
