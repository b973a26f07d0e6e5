"""Connecting to RabbitMQ and declaring what the coordinator owns, idempotently, at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from contracts import ExchangeSpec, QueueSpec, Topology
from contracts.broker import broker_unavailable

CONNECT_ERRORS = (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ did not answer; the message says where and how to start it."""


async def connect(url: str, connect_timeout: float = 10.0) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(url, timeout=connect_timeout)
    except CONNECT_ERRORS as error:
        raise BrokerUnavailable(broker_unavailable(url, error)) from error


async def declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> AbstractExchange:
    return await channel.declare_exchange(spec.name, spec.kind, durable=True)


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    exchange = await declare_exchange(channel, spec.exchange)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    await queue.bind(exchange, routing_key=spec.routing_key)
    return queue


async def declare_coordinator_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Every exchange, the period-closed queue, the payments queue and the dead-letter queue.

    ``payments.invoices`` is declared here, not by the payment service, so no invoice is dropped
    before the payment service first connects. Usage queues belong to the sub-services.
    """
    for spec in topology.exchanges():
        await declare_exchange(channel, spec)
    for queue in (topology.dead_letters_queue, topology.period_closed_queue, topology.payments_queue):
        await declare_queue(channel, queue)


async def delete_topology(channel: AbstractChannel, topology: Topology, services: Iterable[str]) -> None:
    """Delete a namespace's queues and exchanges (demo and test clean-up); never the bare namespace."""
    if not topology.namespace:
        raise ValueError("refusing to delete the un-prefixed topology")
    queues = [
        topology.period_closed_queue,
        topology.payments_queue,
        topology.dead_letters_queue,
        *(topology.usage_queue(service) for service in services),
    ]
    for queue in queues:
        await channel.queue_delete(queue.name)
    for exchange in topology.exchanges():
        await channel.exchange_delete(exchange.name)


async def delete_namespace(url: str, topology: Topology, services: Iterable[str]) -> None:
    """Connect and delete a namespace's queues and exchanges (demo and test clean-up)."""
    connection = await connect(url)
    async with connection:
        await delete_topology(await connection.channel(), topology, services)


class QueueConsumer:
    """Consumes one of the queues the coordinator owns, on a channel of its own.

    Subclasses implement ``on_message``; ``stop`` cancels the consumer and closes the channel and
    is safe to call twice.
    """

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._tag: str | None = None

    @staticmethod
    async def open_queue(
        connection: AbstractConnection, topology: Topology, spec: QueueSpec, prefetch: int
    ) -> tuple[AbstractChannel, AbstractQueue]:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        await declare_coordinator_topology(channel, topology)
        return channel, await channel.get_queue(spec.name)

    @property
    def closed(self) -> bool:
        """The consumer's channel is closed (a robust channel may still be reopening it)."""
        return self._channel.is_closed

    async def begin(self) -> None:
        self._tag = await self._queue.consume(self.on_message)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._tag)
        self._tag = None
        if not self._channel.is_closed:
            await self._channel.close()
