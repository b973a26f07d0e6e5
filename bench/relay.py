"""Invoice events through the outbox relay (store → broker, confirmed, marked sent) against raw
aio-pika confirmed publishing of the same bodies to the same kind of queue, in the same run."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.publisher import AmqpEventPublisher
from accounting.amqp.topology import declare_coordinator_topology, delete_namespace
from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import DRAFT_INVOICE_FIELDS
from accounting.service.relay import OutboxRelay
from accounting.store.repository import ReportStore, StagedInvoice
from contracts import (
    CONTENT_TYPE,
    ROUTING_INVOICE_ISSUED,
    InvoiceIssued,
    InvoiceLine,
    Period,
    ReportCompleted,
    Topology,
    invoice_id,
    report_id,
)

PERIOD = Period.month("2026-07")  # over: the billing calendar refuses a month that is not
OWNER = "bench"


@dataclass(frozen=True)
class Throughput:
    messages: int
    relay_per_second: float
    raw_per_second: float

    @property
    def ratio(self) -> float:
        return self.relay_per_second / self.raw_per_second


def bodies(count: int) -> list[InvoiceIssued]:
    """Invoices of about 1.2 KB, like the demo's."""
    lines = tuple(
        InvoiceLine(
            item=item,
            description=f"{item} (tier 1)",
            tier=1,
            quantity=Decimal("1234.567890"),
            unit="GB-month",
            unit_price=Decimal("0.0230"),
            amount=Decimal("28.40"),
        )
        for item in ("block_storage", "memory", "object_storage", "vcpu")
    )
    return [
        InvoiceIssued(
            invoice_id=invoice_id(f"acct-{number:06d}", PERIOD.period_id, 1),
            report_id=report_id(PERIOD.period_id, 1),
            revision=1,
            account_id=f"acct-{number:06d}",
            period=PERIOD,
            currency="EUR",
            lines=lines,
            subtotal=Decimal("113.60"),
            total=Decimal("113.60"),
            rate_card="sha256:" + "0" * 64,
        )
        for number in range(count)
    ]


async def raw_publish(
    connection: AbstractRobustConnection, topology: Topology, invoices: list[InvoiceIssued], window: int
) -> float:
    """Messages per second: persistent, confirmed, ``window`` in flight, to payments.invoices."""
    channel = await connection.channel(publisher_confirms=True)
    await declare_coordinator_topology(channel, topology)
    exchange = await channel.get_exchange(topology.invoices.name)
    encoded = [(invoice.model_dump_json().encode(), str(invoice.invoice_id)) for invoice in invoices]
    limit = asyncio.Semaphore(window)

    async def publish(body: bytes, message_id: str) -> None:
        async with limit:
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                    type="InvoiceIssued",
                ),
                ROUTING_INVOICE_ISSUED,
                mandatory=True,
            )

    started = time.perf_counter()
    await asyncio.gather(*(publish(body, message_id) for body, message_id in encoded))
    elapsed = time.perf_counter() - started
    await channel.close()
    return len(encoded) / elapsed


async def stage(store: ReportStore, invoices: list[InvoiceIssued]) -> None:
    """A report at PUBLISHING with every invoice in the outbox, as the pricer leaves it."""
    now = datetime.now(UTC)
    key = report_id(PERIOD.period_id, 1)
    await store.create_report(
        report_id=key,
        period=PERIOD,
        revision=1,
        services=("bench",),
        requested=("bench",),
        at=now,
        reason="bench",
        owner=OWNER,
        lease_until=now.replace(year=now.year + 1),
    )
    for status in (ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING):
        await store.move(key, status, now, "bench", owner=OWNER)
    for start in range(0, len(invoices), 2000):
        await store.stage_invoices(
            key,
            OWNER,
            period_id=PERIOD.period_id,
            revision=1,
            currency="EUR",
            invoices=[
                StagedInvoice(
                    invoice.invoice_id,
                    invoice.account_id,
                    str(invoice.total),
                    None,
                    invoice.model_dump_json(exclude=DRAFT_INVOICE_FIELDS),
                )
                for invoice in invoices[start : start + 2000]
            ],
            at=now,
        )
    completed = ReportCompleted(
        report_id=key,
        revision=1,
        period=PERIOD,
        currency="EUR",
        invoice_count=len(invoices),
        total=Decimal("113.60") * len(invoices),
        records=len(invoices),
    )
    await store.finish_completed(key, completed, now, "bench", owner=OWNER)


async def relay_publish(
    connection: AbstractRobustConnection, topology: Topology, invoices: list[InvoiceIssued], window: int
) -> float:
    with tempfile.TemporaryDirectory(prefix="reckon-bench-relay-") as directory:
        store = await ReportStore.open(f"sqlite+aiosqlite:///{Path(directory) / 'reckon.sqlite3'}")
        try:
            await stage(store, invoices)
            publisher = await AmqpEventPublisher.create(connection, topology)
            relay = OutboxRelay(store, publisher, lambda: datetime.now(UTC), window=window)
            started = time.perf_counter()
            sent = await relay.flush()
            elapsed = time.perf_counter() - started
            await publisher.close()
            status = (await store.outbox_status()).pending
        finally:
            await store.close()
    if sent != len(invoices) + 1 or status:
        raise RuntimeError(f"relay sent {sent} of {len(invoices) + 1} ({status} pending)")
    return sent / elapsed


async def run_relay_bench(amqp_url: str, messages: int = 20_000, window: int = 500) -> Throughput:
    invoices = bodies(messages)
    connection = await aio_pika.connect_robust(amqp_url)
    raw_topology, relay_topology = (
        Topology(f"bench-{uuid.uuid4().hex[:8]}"),
        Topology(f"bench-{uuid.uuid4().hex[:8]}"),
    )
    try:
        raw = await raw_publish(connection, raw_topology, invoices, window)
        relayed = await relay_publish(connection, relay_topology, invoices, window)
    finally:
        await connection.close()
        for topology in (raw_topology, relay_topology):
            await delete_namespace(amqp_url, topology, ())
    return Throughput(messages, relayed, raw)
