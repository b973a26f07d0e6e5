"""The machine's floor for a period, measured in the same run as the pipeline it bounds.

No coordinator can close a period faster than its slowest sub-service answers, plus the time the
broker takes to accept every invoice with confirms. So the floor is:

- each sub-service's own answer time: a ``UsageRequest`` published straight to its queue, timed to
  its last chunk, with nothing parsed or stored on the way (the services answer side by side, so
  the slowest one counts), and
- raw confirmed publishing of as many invoices (``bench.relay.raw_publish``: persistent, about
  1.2 KB, to the same kind of queue the relay publishes to).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from accounting.amqp.topology import delete_namespace
from bench.relay import bodies, raw_publish
from contracts import CONTENT_TYPE, Period, Topology, UsageRequest, report_id
from transport.connection import broker_user

_LAST = b'"last":true'
_ERROR = b'"status":"error"'


@dataclass(frozen=True)
class Answer:
    service: str
    seconds: float
    chunks: int
    records: int


@dataclass
class Floor:
    answers: dict[str, Answer] = field(default_factory=dict)
    invoices: int = 0
    publish_seconds: float = 0.0

    @property
    def gather_seconds(self) -> float:
        """The slowest service's answer: they answer side by side."""
        return max((answer.seconds for answer in self.answers.values()), default=0.0)

    @property
    def seconds(self) -> float:
        return self.gather_seconds + self.publish_seconds


async def service_answer(
    connection: AbstractRobustConnection, topology: Topology, service: str, period: Period
) -> Answer:
    """Ask ``service`` for ``period`` straight on its queue and time its whole answer."""
    channel = await connection.channel()
    try:
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        request = UsageRequest(
            request_id=uuid.uuid4().hex,
            report_id=report_id(period.period_id, 1),
            period=period,
            service=service,
            deadline=datetime.now(UTC) + timedelta(minutes=30),
        )
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        chunks = 0

        async def on_reply(message: AbstractIncomingMessage) -> None:
            nonlocal chunks
            chunks += 1
            if done.done():
                return
            if _ERROR in message.body:
                done.set_exception(RuntimeError(f"{service} answered with an error: {message.body[:500]!r}"))
            elif _LAST in message.body:  # the service's SDK writes compact JSON
                done.set_result(int(json.loads(message.body)["chunk"]["total_records"]))

        await replies.consume(on_reply, no_ack=True)
        started = time.perf_counter()
        await channel.default_exchange.publish(
            aio_pika.Message(
                request.to_json(),
                content_type=CONTENT_TYPE,
                correlation_id=request.request_id,
                message_id=request.request_id,
                reply_to=replies.name,
                user_id=broker_user(connection),
                type="UsageRequest",
            ),
            topology.usage_queue(service).name,
        )
        records = await done
        return Answer(service, time.perf_counter() - started, chunks, records)
    finally:
        await channel.close()


async def measure_answers(
    amqp_url: str, topology: Topology, services: Iterable[str], period: Period
) -> dict[str, Answer]:
    """Each service's answer, one after the other (alone on the machine, as its floor)."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        return {service: await service_answer(connection, topology, service, period) for service in services}
    finally:
        await connection.close()


async def measure_publish(amqp_url: str, invoices: int, window: int = 500) -> float:
    """Seconds raw aio-pika takes to publish ``invoices`` invoices with confirms."""
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        per_second = await raw_publish(connection, topology, bodies(invoices), window)
    finally:
        await connection.close()
        await delete_namespace(amqp_url, topology, ())
    return invoices / per_second
