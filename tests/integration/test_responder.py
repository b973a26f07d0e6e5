"""The responder SDK against the real broker: streamed chunks, deadlines, bad requests, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology
from contracts import Period, Topology, UsageRecord, UsageReply, UsageRequest
from tests.integration.support import StaticService, eventually, json_logs, record
from workers.sdk import Responder, WorkerSettings

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


async def request(
    connection: AbstractRobustConnection,
    topology: Topology,
    reply_to: str,
    body: bytes,
    correlation_id: str,
    user: str | None = "guest",
) -> None:
    """Publish a request as the coordinator would: signed with the test connection's user."""
    channel = await connection.channel()
    exchange = await channel.get_exchange(topology.usage.name)
    await exchange.publish(
        aio_pika.Message(body, correlation_id=correlation_id, reply_to=reply_to, user_id=user),
        routing_key="echo",
    )
    await channel.close()


def usage_request(deadline: datetime) -> UsageRequest:
    request_id = uuid.uuid4().hex
    return UsageRequest(
        request_id=request_id, report_id=uuid.uuid4(), period=PERIOD, service="echo", deadline=deadline
    )


async def replies(queue: AbstractQueue, count: int) -> list[UsageReply]:
    received: list[UsageReply] = []
    async with asyncio.timeout(20), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            received.append(UsageReply.from_json(message.body))
            if len(received) == count:
                return received
    raise AssertionError("unreachable")


async def dead_letter_count(connection: AbstractRobustConnection, topology: Topology) -> int:
    channel = await connection.channel()
    queue = await channel.declare_queue(topology.dead_letters_queue.name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count or 0


async def parked(connection: AbstractRobustConnection, topology: Topology) -> bool:
    return await dead_letter_count(connection, topology) == 1


async def test_an_expired_request_is_skipped_and_a_valid_one_answered(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    echo = StaticService("echo", [record("acct-1", "vm-1", "vcpu", "1", "vCPU-second")])
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    responder = await Responder.create(
        connection, echo, WorkerSettings(namespace=topology.namespace, prefetch=1)
    )
    try:
        expired = usage_request(datetime.now(UTC) - timedelta(seconds=1))
        valid = usage_request(datetime.now(UTC) + timedelta(seconds=30))
        await request(connection, topology, reply_queue.name, expired.to_json(), expired.request_id)
        await request(connection, topology, reply_queue.name, valid.to_json(), valid.request_id)

        [reply] = await replies(reply_queue, 1)
    finally:
        await responder.close()

    assert reply.request_id == valid.request_id
    assert reply.status == "ok"
    assert len(reply.records) == 1
    assert echo.calls == [PERIOD]  # the expired request never reached usage()


async def test_an_invalid_request_gets_an_error_reply_and_is_dead_lettered(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    echo = StaticService("echo")
    channel = await connection.channel()
    await declare_coordinator_topology(channel, topology)
    reply_queue = await channel.declare_queue("", exclusive=True)
    responder = await Responder.create(connection, echo, WorkerSettings(namespace=topology.namespace))
    try:
        await request(connection, topology, reply_queue.name, b'{"schema_version": "1.0"}', "corr-1")
        [reply] = await replies(reply_queue, 1)
        await eventually(lambda: parked(connection, topology), timeout=15)
    finally:
        await responder.close()

    assert (reply.request_id, reply.status) == ("corr-1", "error")
    assert reply.error is not None
    assert reply.error.code == "invalid_request"
    assert "request_id" in reply.error.message
    assert echo.calls == []


async def test_a_request_for_another_service_is_refused(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    echo = StaticService("echo")
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    responder = await Responder.create(connection, echo, WorkerSettings(namespace=topology.namespace))
    misrouted = usage_request(datetime.now(UTC) + timedelta(seconds=30)).model_copy(
        update={"service": "other"}
    )
    try:
        await request(connection, topology, reply_queue.name, misrouted.to_json(), misrouted.request_id)
        [reply] = await replies(reply_queue, 1)
    finally:
        await responder.close()

    assert reply.status == "error"
    assert reply.error is not None
    assert "'other'" in reply.error.message
    assert echo.calls == []


class Streaming:
    """An async-generator service: ``count`` records, optionally failing, pausing or slow."""

    name = "echo"

    def __init__(
        self,
        count: int,
        *,
        fail_after: int | None = None,
        pause_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.count = count
        self.fail_after = fail_after
        self.pause_after = pause_after
        self.delay = delay
        self.resume = asyncio.Event()
        self.yielded = 0
        self.closed = False

    async def usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        try:
            for n in range(self.count):
                if n == self.fail_after:
                    raise RuntimeError(f"lost the store after {n} records")
                if n == self.pause_after:
                    await self.resume.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.yielded += 1
                yield record(f"acct-{n % 7}", f"vm-{n:05d}", "vcpu", str(n), "vCPU-second")
        finally:
            self.closed = True


class Finishing(Responder):
    """A responder that says when it has finished with a request (acknowledged it, or not)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await super().on_message(message)
        self.finished.set()


async def finish(responder: Finishing) -> None:
    await asyncio.wait_for(responder.finished.wait(), 20)


async def waiting_requests(connection: AbstractRobustConnection, topology: Topology) -> int:
    channel = await connection.channel()
    queue = await channel.declare_queue(topology.usage_queue("echo").name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count or 0


async def test_an_async_generator_service_streams_in_chunks_with_running_totals(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    service = Streaming(2_500)
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    settings = WorkerSettings(namespace=topology.namespace, chunk_size=100, publish_window=4)
    responder = await Finishing.create(connection, service, settings)
    try:
        asked = usage_request(datetime.now(UTC) + timedelta(seconds=30))
        await request(connection, topology, reply_queue.name, asked.to_json(), asked.request_id)
        received = await replies(reply_queue, 25)
        await finish(responder)
    finally:
        await responder.close()

    assert all((r.request_id, r.status) == (asked.request_id, "ok") for r in received)
    assert [r.chunk.seq for r in received] == list(range(25))
    assert [r.chunk.last for r in received] == [False] * 24 + [True]
    assert [r.chunk.total_records for r in received] == [100 * (n + 1) for n in range(25)]
    assert all(len(r.records) == 100 for r in received)
    resources = [rec.resource_id for r in received for rec in r.records]
    assert resources == [f"vm-{n:05d}" for n in range(2_500)]
    assert service.closed
    assert await waiting_requests(connection, topology) == 0  # acknowledged


async def test_an_exception_mid_stream_gives_an_internal_error_after_the_chunks_sent(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    service = Streaming(1_000, fail_after=250)
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    settings = WorkerSettings(namespace=topology.namespace, chunk_size=100)
    responder = await Finishing.create(connection, service, settings)
    try:
        asked = usage_request(datetime.now(UTC) + timedelta(seconds=30))
        with json_logs() as logged:
            await request(connection, topology, reply_queue.name, asked.to_json(), asked.request_id)
            received = await replies(reply_queue, 3)
            await finish(responder)
    finally:
        await responder.close()

    # The failure is an error line, and the answer sent one line at INFO, both naming the request.
    failed, answered = logged.of("reckon.worker")
    assert (failed["level"], failed["request_id"]) == ("error", asked.request_id)
    assert "RuntimeError: lost the store after 250 records" in failed["exception"]
    assert answered["level"] == "info"
    assert answered["event"].startswith(
        f"service echo: request {asked.request_id} answered with an error reply (internal): "
        "200 records in 2 chunk(s)"
    )
    assert {
        key: answered[key] for key in ("request_id", "report_id", "outcome", "error", "records", "chunks")
    } == {
        "request_id": asked.request_id,
        "report_id": str(asked.report_id),
        "outcome": "error",
        "error": "internal",
        "records": 200,
        "chunks": 2,
    }

    first, second, failure = received
    assert [(r.status, r.chunk.seq, r.chunk.last, len(r.records)) for r in (first, second)] == [
        ("ok", 0, False, 100),
        ("ok", 1, False, 100),
    ]
    assert failure.status == "error"
    assert failure.error is not None
    assert (failure.error.code, failure.error.retryable) == ("internal", False)
    assert failure.error.message == "RuntimeError: lost the store after 250 records"
    assert service.closed
    assert await waiting_requests(connection, topology) == 0


async def test_an_answer_not_complete_by_the_deadline_ends_with_a_deadline_error(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    service = Streaming(10_000, delay=0.01)  # far longer than the deadline
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    settings = WorkerSettings(namespace=topology.namespace, chunk_size=10)
    responder = await Finishing.create(connection, service, settings)
    received: list[UsageReply] = []
    try:
        asked = usage_request(datetime.now(UTC) + timedelta(seconds=1.5))
        await request(connection, topology, reply_queue.name, asked.to_json(), asked.request_id)
        async with asyncio.timeout(20), reply_queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                received.append(UsageReply.from_json(message.body))
                if received[-1].status == "error":
                    break
        await finish(responder)
    finally:
        await responder.close()

    *chunks, failure = received
    assert chunks, "some chunks went out before the deadline"
    assert all(r.status == "ok" and not r.chunk.last for r in chunks)
    assert [r.chunk.seq for r in chunks] == list(range(len(chunks)))
    assert failure.error is not None
    assert (failure.error.code, failure.error.retryable) == ("deadline", True)
    assert service.closed and service.yielded < service.count
    assert await waiting_requests(connection, topology) == 0


async def test_a_returned_reply_stops_the_answer_and_the_request_is_acknowledged(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    service = Streaming(5_000, pause_after=150)
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    settings = WorkerSettings(namespace=topology.namespace, chunk_size=100)
    responder = await Finishing.create(connection, service, settings)
    try:
        asked = usage_request(datetime.now(UTC) + timedelta(seconds=30))
        await request(connection, topology, reply_queue.name, asked.to_json(), asked.request_id)
        [first] = await replies(reply_queue, 1)
        await reply_queue.delete(if_unused=False, if_empty=False)  # the coordinator went away
        service.resume.set()
        await finish(responder)
    finally:
        await responder.close()

    assert (first.chunk.seq, first.chunk.last) == (0, False)
    assert service.yielded < service.count  # the rest of the answer was never produced
    assert await waiting_requests(connection, topology) == 0  # acknowledged, not redelivered


async def test_a_usage_queue_declared_as_a_quorum_queue_by_an_earlier_version_is_served_as_it_is(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    spec = topology.usage_queue("echo")
    setup = await connection.channel()
    exchange = await setup.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
    old = await setup.declare_queue(spec.name, durable=True, arguments={"x-queue-type": "quorum"})
    await old.bind(exchange, spec.routing_key)
    await setup.close()
    echo = StaticService("echo", [record("acct-1", "vm-1", "vcpu", "1", "vCPU-second")])
    channel = await connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True)
    responder = await Responder.create(connection, echo, WorkerSettings(namespace=topology.namespace))
    try:
        valid = usage_request(datetime.now(UTC) + timedelta(seconds=30))
        await request(connection, topology, reply_queue.name, valid.to_json(), valid.request_id)
        [reply] = await replies(reply_queue, 1)
    finally:
        await responder.close()
        await channel.close()

    assert (reply.request_id, reply.status, len(reply.records)) == (valid.request_id, "ok", 1)
