"""A sub-service and the payment consumer as real processes, stopped with SIGTERM mid-work.

On SIGTERM each stops taking work, gives back to its queue what it did not acknowledge (the next
process gets it), and exits 0 within its grace period. (The coordinator's SIGTERM is in
test_crash_and_shutdown.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import func, select

from accounting.amqp.topology import declare_coordinator_topology
from contracts import CONTENT_TYPE, ROUTING_INVOICE_ISSUED, Period, Topology, UsageReply, UsageRequest
from payments.ledger import SqlLedger, payments
from tests.integration.support import eventually
from tests.invoices import sample_invoice
from transport.queues import wait_for_consumer
from workers.compute.seed import seed as seed_compute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PERIOD = Period.month("2026-10")
EXIT_WITHIN = 60
"""Seconds a stopped process may take to exit, far above its grace period: never a measurement."""


@asynccontextmanager
async def started(
    amqp_url: str, topology: Topology, log: Path, *command: str, **settings: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RECKON_NAMESPACE": topology.namespace,
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), EXIT_WITHIN)


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), EXIT_WITHIN)


async def waiting(connection: AbstractRobustConnection, queue: str) -> int:
    """Messages ready in ``queue`` (delivered and unacknowledged ones are not counted)."""
    async with connection.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


@dataclass
class Answers:
    """Reply chunks by request id, then by answer id: (seq, last) of each."""

    chunks: defaultdict[str, defaultdict[str, list[tuple[int, bool]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def take(self, reply: UsageReply) -> None:
        assert reply.chunk is not None, reply
        self.chunks[reply.request_id][reply.chunk.answer_id or ""].append((reply.chunk.seq, reply.chunk.last))

    def complete(self, request_id: str) -> set[str]:
        """Answer ids of the request with every chunk, up to the last, received."""
        return {
            answer
            for answer, chunks in self.chunks[request_id].items()
            if any(last for _, last in chunks) and len({seq for seq, _ in chunks}) == max(chunks)[0] + 1
        }


async def test_a_worker_stopped_mid_answer_gives_its_requests_back_and_exits_0(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    db = tmp_path / "compute.sqlite3"
    seed_compute(db, PERIOD, accounts=2000)  # thousands of records, one chunk each: seconds of work
    queue = topology.usage_queue("compute").name
    answers = Answers()
    channel = await connection.channel(publisher_confirms=True)
    replies = await channel.declare_queue("", exclusive=True, auto_delete=True)

    async def on_reply(message: AbstractIncomingMessage) -> None:
        answers.take(UsageReply.from_json(message.body))

    await replies.consume(on_reply, no_ack=True)
    serve = ("-m", "workers.compute", "serve", "--db", str(db))
    async with started(
        amqp_url,
        topology,
        tmp_path / "first.log",
        *serve,
        prefetch="1",
        chunk_size="1",
        publish_window="1",
        shutdown_grace_seconds="0.5",
    ) as first:
        await wait_for_consumer(connection, queue)
        exchange = await channel.get_exchange(topology.usage.name)
        asked = [uuid.uuid4().hex for _ in range(2)]
        for request_id in asked:
            request = UsageRequest(
                request_id=request_id,
                report_id=uuid.uuid4(),
                period=PERIOD,
                service="compute",
                deadline=datetime.now(UTC) + timedelta(minutes=5),
            )
            await exchange.publish(
                aio_pika.Message(
                    request.to_json(),
                    content_type=CONTENT_TYPE,
                    correlation_id=request_id,
                    message_id=request_id,
                    reply_to=replies.name,
                    user_id="guest",
                ),
                routing_key="compute",
                mandatory=True,
            )
        await eventually(lambda: len(answers.chunks[asked[0]]) == 1, timeout=60)  # mid-answer
        assert await stop(first) == 0

    log = (tmp_path / "first.log").read_text(errors="replace")
    assert "not finished within 0.5s: given back to the queue" in log, log
    assert not answers.complete(asked[0]), "the first worker was to be stopped mid-answer"
    assert not answers.chunks[asked[1]], "with prefetch 1 the second request was never delivered to it"
    # The request it was answering went back to the queue; the other one never left it.
    assert await waiting(connection, queue) == 2
    cut_short = set(answers.chunks[asked[0]])

    async with started(amqp_url, topology, tmp_path / "second.log", *serve) as second:
        await eventually(lambda: all(answers.complete(request_id) for request_id in asked), timeout=120)
        assert await stop(second) == 0
    assert answers.complete(asked[0]).isdisjoint(cut_short)  # answered anew, never mixed with the cut one
    assert await waiting(connection, queue) == 0
    await channel.close()


async def publish_invoices(connection: AbstractRobustConnection, topology: Topology, count: int) -> set[str]:
    """``count`` invoices as the relay publishes them (persistent, confirmed, from broker user guest)."""
    async with connection.channel(publisher_confirms=True) as channel:
        await declare_coordinator_topology(channel, topology)
        exchange = await channel.get_exchange(topology.invoices.name)
        invoices = [sample_invoice(f"acct-{n:05d}") for n in range(count)]
        for start in range(0, count, 250):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            invoice.to_json(),
                            content_type=CONTENT_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=str(invoice.invoice_id),
                            type="InvoiceIssued",
                            user_id="guest",
                        ),
                        ROUTING_INVOICE_ISSUED,
                        mandatory=True,
                    )
                    for invoice in invoices[start : start + 250]
                )
            )
    return {str(invoice.invoice_id) for invoice in invoices}


async def paid(ledger: SqlLedger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(payments))).scalar_one())


async def test_the_payment_consumer_stopped_mid_work_gives_back_what_it_did_not_record_and_exits_0(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    total = 300
    await publish_invoices(connection, topology, total)
    queue = topology.payments_queue.name
    path = tmp_path / "payments.sqlite3"
    ledger = await SqlLedger.open(path)
    command = ("-m", "accounting.cli", "payments", "--db", str(path))
    try:
        async with started(
            amqp_url, topology, tmp_path / "first.log", *command, shutdown_grace_seconds="5"
        ) as first:

            async def some_paid() -> bool:
                return await ledger.count() >= 20

            await eventually(some_paid, timeout=120)
            assert await stop(first) == 0
        recorded = await ledger.count()
        assert 0 < recorded < total, "the consumer was to be stopped mid-work"
        # Everything it did not record (and acknowledge) is back in the queue: nothing lost, nothing held.
        assert recorded + await waiting(connection, queue) == total

        async with started(amqp_url, topology, tmp_path / "second.log", *command) as second:

            async def all_paid() -> bool:
                return await ledger.count() == total

            await eventually(all_paid, timeout=300)
            assert await stop(second) == 0
        assert await paid(ledger) == total  # each invoice paid once, whoever handled it
        assert await waiting(connection, queue) == 0
    finally:
        await ledger.close()
    assert "invoices handled" in (tmp_path / "second.log").read_text(errors="replace")
