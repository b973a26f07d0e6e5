"""Declaring what the contract's topology describes, and waiting for a queue another party owns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
)

from contracts import ExchangeSpec, QueueSpec


async def declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> AbstractExchange:
    return await channel.declare_exchange(spec.name, spec.kind, durable=True)


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """The queue with its arguments, its exchange, and its bindings (idempotent)."""
    exchange = await declare_exchange(channel, spec.exchange)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    for routing_key in (spec.routing_key, *spec.also_bound):
        await queue.bind(exchange, routing_key=routing_key)
    return queue


async def look_up(channel: AbstractChannel, name: str) -> AbstractQueue:
    """A passive declare that asks the broker every time: a robust channel answers a repeated one
    from its cache (aio-pika), with the message and consumer counts of the first."""
    if isinstance(channel, AbstractRobustChannel):
        return await channel.declare_queue(name, passive=True, robust=False)
    return await channel.declare_queue(name, passive=True)


class QueueProbe:
    """Looks queues up on one channel kept open, so a look costs one round trip; a missing queue
    closes that channel (the broker's answer to a passive declare), and the next look opens
    another. A passive declare needs no permission on the queue."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def look(self, name: str) -> AbstractQueue | None:
        """Queue ``name`` with its message and consumer counts as the broker has them now; None
        when it does not exist."""
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            try:
                return await look_up(self._channel, name)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                self._channel = None
                return None

    async def consumers(self, name: str) -> int:
        """How many consumers queue ``name`` has; 0 when it does not exist."""
        queue = await self.look(name)
        return 0 if queue is None else int(queue.declaration_result.consumer_count or 0)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None


async def queue_exists(connection: AbstractConnection, name: str) -> bool:
    """Whether queue ``name`` exists, asked once on a channel of its own."""
    probe = QueueProbe(connection)
    try:
        return await probe.look(name) is not None
    finally:
        await probe.close()


async def consumer_count(connection: AbstractConnection, name: str) -> int:
    """How many consumers queue ``name`` has (0 when it does not exist), asked once on a channel of
    its own."""
    probe = QueueProbe(connection)
    try:
        return await probe.consumers(name)
    finally:
        await probe.close()


async def wait_for_consumer(
    connection: AbstractConnection,
    name: str,
    timeout: float = 60.0,
    poll: float = 0.1,
    give_up: Callable[[], None] | None = None,
) -> None:
    """Wait until queue ``name`` has a consumer (its service is up); as ``wait_for_queue`` otherwise."""

    async def consumed() -> bool:
        return await consumer_count(connection, name) > 0

    await _wait_until(consumed, timeout, poll, give_up)


async def wait_for_queue(
    connection: AbstractConnection,
    name: str,
    timeout: float = 60.0,
    poll: float = 0.1,
    give_up: Callable[[], None] | None = None,
) -> None:
    """Wait until queue ``name`` exists (its owner declared it). ``give_up`` is called before every
    look and may raise to stop waiting (a process that should declare it has exited, say); past
    ``timeout`` it raises ``TimeoutError``."""
    await _wait_until(lambda: queue_exists(connection, name), timeout, poll, give_up)


async def _wait_until(
    holds: Callable[[], Awaitable[bool]], timeout: float, poll: float, give_up: Callable[[], None] | None
) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if give_up is not None:
                give_up()
            if await holds():
                return
            await asyncio.sleep(poll)
