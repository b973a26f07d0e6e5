"""Each gather's own reply queue: taken when a gather starts, kept a while after it ends.

A gather's queue is exclusive and auto-delete, with the gatherer's reply handler consuming it;
it is not restored after a reconnect (a gather that used it has settled as ``transport_lost`` by
then). One spare is declared while the previous gather runs, so a report does not wait for the
two round trips (``queue.declare``, ``basic.consume``); a spare from before a lost channel or
connection is dropped. A finished gather's queue stays ``late_seconds`` so late replies are still
counted as late, then its consumer is cancelled and the broker deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import cast

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustQueue,
)

LATE_SECONDS = 60.0
"""How long a finished gather's reply queue stays, counting late replies, before it is deleted."""
_QUEUE_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError)

Consumer = tuple[AbstractQueue, str]
"""A reply queue and its consumer tag."""


class ReplyQueues:
    def __init__(
        self, on_reply: Callable[[AbstractIncomingMessage], Awaitable[None]], late_seconds: float
    ) -> None:
        self._on_reply = on_reply
        self._late_seconds = late_seconds
        self._running: set[str] = set()
        self._generation = 0
        """Counts channel and connection losses: a spare of an earlier one is gone."""
        self._spare: tuple[int, asyncio.Task[Consumer]] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def names(self) -> list[str]:
        """The queues of the gathers running now."""
        return list(self._running)

    def lost(self) -> None:
        """The channel or the connection was lost: its queues (and the spare) went with it."""
        self._generation += 1

    async def take(self, channel: AbstractChannel) -> Consumer:
        """A gather's queue: the spare when it is ready on this channel, else a new one; and the
        next spare is started."""
        generation, spare = self._spare or (-1, None)
        self._spare = (self._generation, asyncio.create_task(self._declare(channel)))
        consumer: Consumer | None = None
        if spare is not None and generation == self._generation:
            with contextlib.suppress(*_QUEUE_ERRORS):
                consumer = await spare
        elif spare is not None:
            spare.cancel()
        if consumer is None:
            consumer = await self._declare(channel)
        self._running.add(consumer[0].name)
        return consumer

    async def _declare(self, channel: AbstractChannel) -> Consumer:
        if isinstance(channel, AbstractRobustChannel):
            queue: AbstractQueue = await channel.declare_queue(
                "", exclusive=True, auto_delete=True, robust=False
            )
            tag = await cast(AbstractRobustQueue, queue).consume(self._on_reply, robust=False)
        else:
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            tag = await queue.consume(self._on_reply)
        return queue, tag

    def retire(self, consumer: Consumer) -> None:
        """Delete a finished gather's queue (by cancelling its only consumer) after the late window."""
        queue, tag = consumer
        self._running.discard(queue.name)

        async def later() -> None:
            await asyncio.sleep(self._late_seconds)
            with contextlib.suppress(*_QUEUE_ERRORS):
                await queue.cancel(tag)

        task = asyncio.create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Stop the pending deletions and the spare (the channel's close takes the queues)."""
        tasks = [*self._retiring, *([self._spare[1]] if self._spare is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
