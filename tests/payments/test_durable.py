"""The reference payment consumer on the real broker, with its durable ledger: a failing handler is
retried and the invoice handled once; a restarted consumer drops what it already handled; a
poison invoice is parked in dead letters, counted, and handled once after a replay."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from accounting.amqp.topology import declare_coordinator_topology
from accounting.dlq.queue import list_dead_letters, replay_dead_letters
from contracts import CONTENT_TYPE, DELIVERY_LIMIT, ROUTING_INVOICE_ISSUED, InvoiceIssued, Topology
from payments.consumer import PaymentConsumer
from payments.ledger import Document, MemoryLedger, SqlLedger, Work, payments, record_payment
from tests.integration.support import eventually
from tests.invoices import sample_invoice

pytestmark = pytest.mark.integration


async def publish(connection: AbstractRobustConnection, topology: Topology, invoice: InvoiceIssued) -> None:
    """As the relay does: persistent, confirmed, ``message_id`` = the invoice id."""
    async with connection.channel(publisher_confirms=True) as channel:
        await declare_coordinator_topology(channel, topology)
        exchange = await channel.get_exchange(topology.invoices.name)
        await exchange.publish(
            aio_pika.Message(
                invoice.to_json(),
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(invoice.invoice_id),
                type="InvoiceIssued",
            ),
            ROUTING_INVOICE_ISSUED,
            mandatory=True,
        )


class FlakyPayments:
    """A handler given the transaction: fails ``failures`` times (or until fixed), then pays."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.paid = 0

    async def __call__(self, invoice: Document, tx: AsyncConnection) -> None:
        self.attempts += 1
        await record_payment(invoice, tx)  # written, then rolled back when we fail below
        if self.attempts <= self.failures:
            raise ConnectionError("payment provider unreachable")
        self.paid += 1


async def payment_rows(ledger: SqlLedger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(payments))).scalar_one())


async def queue_is_empty(connection: AbstractRobustConnection, topology: Topology) -> bool:
    async with connection.channel() as channel:
        queue = await channel.get_queue(topology.payments_queue.name)
        message = await queue.get(fail=False)
        if message is not None:
            await message.nack(requeue=True)
        return message is None


async def test_a_handler_that_fails_once_is_retried_and_the_invoice_handled_once(
    connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    invoice = sample_invoice("acme")
    handler = FlakyPayments(failures=1)
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")
    try:
        consumer = await PaymentConsumer.start(connection, topology, ledger=ledger, in_transaction=handler)
        await publish(connection, topology, invoice)
        await eventually(lambda: len(consumer.invoices) == 1, timeout=15)
        await publish(connection, topology, invoice)  # a relay's re-send after a lost confirm
        await eventually(lambda: consumer.duplicates == 1, timeout=15)
        await consumer.stop()

        assert (handler.attempts, handler.paid) == (2, 1)
        assert (consumer.failures, consumer.parked, consumer.rejected) == (1, 0, 0)
        assert await payment_rows(ledger) == 1  # the failed attempt's row was rolled back
        assert await ledger.count() == 1
        assert await queue_is_empty(connection, topology)  # everything acknowledged
    finally:
        await ledger.close()


async def test_a_restarted_consumer_on_the_same_file_drops_what_it_already_handled(
    connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    path = tmp_path / "payments.sqlite3"
    first_invoice, second_invoice = sample_invoice("acme"), sample_invoice("globex")
    printed: list[InvoiceIssued] = []

    ledger = await SqlLedger.open(path)
    consumer = await PaymentConsumer.start(
        connection, topology, printed.append, ledger=ledger, in_transaction=record_payment
    )
    await publish(connection, topology, first_invoice)
    await eventually(lambda: len(consumer.invoices) == 1, timeout=15)
    await consumer.stop()
    await ledger.close()

    # The relay sends the first invoice again (its confirm was lost), and then a new one.
    await publish(connection, topology, first_invoice)
    await publish(connection, topology, second_invoice)

    restarted_ledger = await SqlLedger.open(path)
    try:
        restarted = await PaymentConsumer.start(
            connection, topology, printed.append, ledger=restarted_ledger, in_transaction=record_payment
        )
        await eventually(lambda: len(restarted.invoices) == 1 and restarted.duplicates == 1, timeout=15)
        await restarted.stop()

        assert list(restarted.invoices) == [second_invoice.invoice_id]
        assert [invoice.account_id for invoice in printed] == ["acme", "globex"]
        assert await payment_rows(restarted_ledger) == 2
    finally:
        await restarted_ledger.close()


async def test_a_poison_invoice_is_parked_counted_and_handled_once_after_its_replay(
    connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    invoice = sample_invoice("acme")
    handler = FlakyPayments(failures=10**6)
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")
    try:
        consumer = await PaymentConsumer.start(connection, topology, ledger=ledger, in_transaction=handler)
        await publish(connection, topology, invoice)
        await eventually(lambda: consumer.parked == 1, timeout=30)

        async def parked() -> bool:
            return (await list_dead_letters(connection, topology))[1] == 1

        await eventually(parked, timeout=15)
        [letter], _ = await list_dead_letters(connection, topology)
        assert consumer.failures == DELIVERY_LIMIT + 1  # every delivery the queue allows
        assert (letter.id, letter.reason) == (str(invoice.invoice_id), "delivery_limit")
        assert letter.queue == topology.payments_queue.name
        assert not await ledger.is_handled(invoice.invoice_id)

        handler.failures = 0  # the fix is deployed
        [outcome] = await replay_dead_letters(connection, topology, [letter.id])
        await eventually(lambda: len(consumer.invoices) == 1, timeout=15)
        await consumer.stop()

        assert outcome.status == "replayed"
        assert handler.paid == 1
        assert await payment_rows(ledger) == 1
        assert await list_dead_letters(connection, topology) == ([], 0)
    finally:
        await ledger.close()


async def test_the_in_memory_consumer_keeps_its_api(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    seen: list[str] = []
    consumer = await PaymentConsumer.start(
        connection, topology, lambda invoice: seen.append(invoice.account_id)
    )
    invoice = sample_invoice("acme")
    for _ in range(2):
        await publish(connection, topology, invoice)
    await eventually(lambda: len(consumer.invoices) + consumer.duplicates == 2, timeout=15)
    await consumer.stop()

    assert (list(consumer.invoices), consumer.duplicates, consumer.rejected) == ([invoice.invoice_id], 1, 0)
    assert seen == ["acme"]


async def test_in_transaction_needs_a_durable_ledger(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    with pytest.raises(ValueError, match="SqlLedger"):
        await PaymentConsumer.start(connection, topology, in_transaction=record_payment)


class FlakyLedger(MemoryLedger):
    """A ledger whose database fails once, outside any handler."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 1

    async def handle_once(self, document: Document, work: Work) -> bool:
        if self.outages:
            self.outages -= 1
            raise OSError("database is locked")
        return await super().handle_once(document, work)


async def test_a_ledger_outage_gives_the_invoice_back_without_counting_it_as_a_handler_failure(
    connection: AbstractRobustConnection, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("payments.consumer.LEDGER_RETRY_SECONDS", 0.05)
    handled: list[str] = []
    consumer = await PaymentConsumer.start(
        connection, topology, lambda invoice: handled.append(invoice.account_id), ledger=FlakyLedger()
    )
    await publish(connection, topology, sample_invoice("acme"))
    await eventually(lambda: len(consumer.invoices) == 1, timeout=15)
    await consumer.stop()

    assert (consumer.ledger_errors, consumer.failures, consumer.parked) == (1, 0, 0)
    assert handled == ["acme"]
