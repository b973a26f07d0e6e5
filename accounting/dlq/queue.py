"""``billing.dead-letters`` on the broker: read without consuming, replay, purge.

Reading is ``basic.get`` without auto-ack: every message read is held unacknowledged until the
command ends, then all of them go back with one ``basic.nack(multiple, requeue=True)`` and the
channel closes (if the process dies first, closing the connection returns them just the same).
Holding them all until the end is what keeps a listing from seeing the same message twice or
disturbing their order: a quorum queue hands a returned message out again before the rest, so
returning each one as it was read would loop on the first. Returned together, they keep their
order (checked on RabbitMQ 3.10, where each return also adds one to ``x-delivery-count``).
A command reads until ``basic.get`` finds the queue empty, never up to the queue's message count:
a quorum queue answers that count from its applied state, which can lag the returns of the
command just before by a moment (seen: a listing right after another counted 0).

How the broker counts those returns, by version (``DeadLetter.reads`` shows the count):

- RabbitMQ 3.x: every return counts, but ``billing.dead-letters`` has no delivery limit: harmless.
- RabbitMQ 4.0-4.2: quorum queues have a default delivery limit of 20 and count every return,
  so a dead letter listed 20 times would be **dropped** (the dead-letters queue has no
  dead-letter exchange of its own). Give ``billing.dead-letters`` a higher limit by policy
  (``delivery-limit``) on those versions; ``dlq list`` warns about letters read 15 times or more.
- RabbitMQ 4.3+: only failures (``basic.reject``, a closed channel) count; ``basic.nack`` with
  requeue — what this module uses — does not.

A replay republishes a dead letter to the exchange and routing key it was first published with
(``x-death``), with its own properties and headers (less the broker's death bookkeeping),
persistent, mandatory, on a channel with publisher confirms; only after the broker confirmed it
(and did not return it) is the dead letter acknowledged, i.e. removed. A crash between the two
leaves both copies: replayed messages must be idempotent by ``message_id``, as invoices are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage

from accounting.dlq.letters import DeadLetter, dead_letter, replay_headers, select
from contracts import Topology

MAX_SCAN = 100_000
"""At most this many dead letters are read (and held) by one command."""


class DeadLettersMissing(RuntimeError):
    """The namespace has no dead-letters queue (no coordinator ever started in it?)."""


class UnknownDeadLetters(LookupError):
    """Some of the IDs named no dead letter; nothing was done."""

    def __init__(self, ids: Sequence[str], queue: str) -> None:
        super().__init__(f"no dead letter with ID {', '.join(ids)} in {queue} (see `reckon dlq list`)")
        self.ids = tuple(ids)


@dataclass(frozen=True)
class Held:
    letter: DeadLetter
    message: AbstractIncomingMessage


@dataclass(frozen=True)
class ReplayOutcome:
    id: str
    status: Literal["replayed", "returned", "failed"]
    detail: str


def _letter(message: AbstractIncomingMessage) -> DeadLetter:
    return dead_letter(
        message.body,
        message.headers,
        message_id=message.message_id,
        message_type=message.type,
        timestamp=message.timestamp,
        content_type=message.content_type,
    )


class DeadLetterReader:
    """Holds what it read until ``release``: use it as ``async with await DeadLetterReader.open(...)``."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self.queue = queue
        self._held: list[Held] = []

    @classmethod
    async def open(cls, connection: AbstractConnection, topology: Topology) -> DeadLetterReader:
        name = topology.dead_letters_queue.name
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise DeadLettersMissing(
                f"no queue {name}: has a coordinator ever started in namespace "
                f"{topology.namespace or '(none)'}?"
            ) from None
        return cls(channel, queue)

    async def read(self) -> list[Held]:
        """Every dead letter (up to ``MAX_SCAN``) in queue order, each held unacknowledged.
        ``basic.get`` until the queue has nothing more to give: unlike the queue's message count,
        that is never behind the broker's own state."""
        while len(self._held) < MAX_SCAN:
            message = await self.queue.get(no_ack=False, fail=False)
            if message is None:
                break
            self._held.append(Held(_letter(message), message))
        return list(self._held)

    async def acknowledge(self, held: Held) -> None:
        """Remove a dead letter for good (after its replay was confirmed)."""
        await held.message.ack()
        self._held.remove(held)

    async def release(self) -> None:
        """Give back everything still held, in one frame, and close the channel."""
        held, self._held = self._held, []
        if held and not self._channel.is_closed:
            await held[-1].message.nack(multiple=True, requeue=True)
        if not self._channel.is_closed:
            await self._channel.close()

    async def __aenter__(self) -> DeadLetterReader:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()


async def list_dead_letters(
    connection: AbstractConnection, topology: Topology, limit: int = MAX_SCAN
) -> tuple[list[DeadLetter], int]:
    """The first ``limit`` dead letters and how many there are; none is consumed."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        letters = [held.letter for held in await reader.read()]
        return letters[:limit], len(letters)


async def find_dead_letters(
    connection: AbstractConnection, topology: Topology, ids: Sequence[str]
) -> list[DeadLetter]:
    """Every dead letter with one of ``ids``; ``UnknownDeadLetters`` if an id names none."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        chosen, unknown = select([held.letter for held in await reader.read()], ids)
        if unknown:
            raise UnknownDeadLetters(unknown, reader.queue.name)
        return chosen


async def replay_dead_letters(
    connection: AbstractConnection, topology: Topology, ids: Sequence[str], confirm_timeout: float = 10.0
) -> list[ReplayOutcome]:
    """Republish each named dead letter where it was first published; remove it once confirmed.

    Unknown ids raise ``UnknownDeadLetters`` before anything is republished.
    """
    async with await DeadLetterReader.open(connection, topology) as reader:
        held = await reader.read()
        chosen, unknown = select([item.letter for item in held], ids)
        if unknown:
            raise UnknownDeadLetters(unknown, reader.queue.name)
        wanted = {id(letter) for letter in chosen}
        writer = await connection.channel(publisher_confirms=True)
        try:
            outcomes = []
            for item in held:
                if id(item.letter) in wanted:
                    writer = await _open(connection, writer)
                    outcomes.append(await _replay(reader, writer, item, confirm_timeout))
            return outcomes
        finally:
            if not writer.is_closed:
                await writer.close()


async def _open(connection: AbstractConnection, writer: AbstractChannel) -> AbstractChannel:
    """The publishing channel, opened again if the broker closed it (a missing exchange, say)."""
    return await connection.channel(publisher_confirms=True) if writer.is_closed else writer


async def _replay(
    reader: DeadLetterReader, writer: AbstractChannel, held: Held, confirm_timeout: float
) -> ReplayOutcome:
    letter, original = held.letter, held.message
    if letter.exchange is None or letter.routing_key is None:
        return ReplayOutcome(letter.id, "failed", "no x-death header: where it came from is unknown")
    target = f"{letter.exchange or '(default exchange)'} / {letter.routing_key}"
    message = aio_pika.Message(
        letter.body,
        headers=replay_headers(original.headers),
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        type=original.type,
        user_id=original.user_id,
        app_id=original.app_id,
    )
    exchange = (
        writer.default_exchange
        if letter.exchange == ""
        else await writer.get_exchange(letter.exchange, ensure=False)
    )
    try:
        result = await exchange.publish(message, letter.routing_key, mandatory=True, timeout=confirm_timeout)
    except (aio_pika.exceptions.AMQPError, TimeoutError) as error:
        return ReplayOutcome(letter.id, "failed", f"{target}: {type(error).__name__}: {error}; left in place")
    if isinstance(result, DeliveredMessage):
        return ReplayOutcome(letter.id, "returned", f"{target}: no queue is bound there; left in place")
    await reader.acknowledge(held)
    return ReplayOutcome(letter.id, "replayed", f"to {target}, confirmed; removed from dead letters")


async def count_dead_letters(connection: AbstractConnection, topology: Topology) -> int:
    """How many dead letters there are (to ask before a purge): read, not the queue's count."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        return len(await reader.read())


async def purge_dead_letters(connection: AbstractConnection, topology: Topology) -> int:
    """Delete every ready dead letter; returns how many."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        result = await reader.queue.purge()
        return result.message_count or 0
