"""Consuming one queue on a channel of its own, stoppable twice over."""

from __future__ import annotations

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue


class QueueConsumer:
    """Consumes one queue on a channel of its own.

    Subclasses implement ``on_message``; ``stop`` cancels the consumer and closes the channel and
    is safe to call twice.
    """

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._tag: str | None = None

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
