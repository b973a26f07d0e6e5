"""The responder SDK against the real broker: deadlines, bad requests, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from accounting.broker import declare_coordinator_topology
from contracts import Period, Topology, UsageReply, UsageRequest
from tests.integration.support import StaticService, eventually, record
from workers.sdk import Responder, WorkerSettings

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


async def request(
    connection: AbstractRobustConnection, topology: Topology, reply_to: str, body: bytes, correlation_id: str
) -> None:
    channel = await connection.channel()
    exchange = await channel.get_exchange(topology.usage.name)
    await exchange.publish(
        aio_pika.Message(body, correlation_id=correlation_id, reply_to=reply_to), routing_key="echo"
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
