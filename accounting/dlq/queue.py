"""``billing.dead-letters`` on the broker: read without consuming, replay, purge.

Reading is ``basic.get`` without auto-ack, one message at a time: each is read into a
``DeadLetter`` **without its body** (its size, hash and a preview stay) unless the command needs
that body (``show`` and ``replay`` keep the ones they name), so a listing holds one body at a time
whatever the letters weigh. Every message read is held unacknowledged until the command ends
(only its delivery tag is kept), then all of them go back with one
``basic.nack(multiple, requeue=True)`` and the channel closes (if the process dies first, closing
the connection returns them just the same). Holding them all until the end is what keeps a listing
from seeing the same message twice or disturbing their order: a quorum queue hands a returned
message out again before the rest, so returning each one as it was read would loop on the first.
Returned together, they keep their order (checked on RabbitMQ 3.10, where each return also adds
one to ``x-delivery-count``). A command reads until ``basic.get`` finds the queue empty, never up to
the queue's message count: a quorum queue answers that count from its applied state, which can lag
the returns of the command just before by a moment (seen: a listing right after another counted 0).

How the broker counts those returns, by version (``DeadLetter.reads`` shows the count):

- RabbitMQ 3.x: every return counts, but ``billing.dead-letters`` has no delivery limit: harmless.
- RabbitMQ 4.0-4.2: quorum queues have a default delivery limit of 20 and count every return,
  so a dead letter listed 20 times would be **dropped** (the dead-letters queue has no
  dead-letter exchange of its own). Give ``billing.dead-letters`` a higher limit by policy
  (``delivery-limit``) on those versions; ``dlq list`` warns about letters read 15 times or more.
- RabbitMQ 4.3+: only failures (``basic.reject``, a closed channel) count; ``basic.nack`` with
  requeue — what this module uses — does not.

A **purge** reads (and holds) every letter, asks, then acknowledges exactly those it read — the
ones it listed, by delivery tag — never a letter that arrived after its listing (that one was
never read). It does not use ``queue.purge``, which deletes whatever is ready when it runs.

A **replay** republishes a dead letter to the exchange and routing key it was first published with
(``x-death``), with its own properties and headers (less the broker's death bookkeeping, plus one
more in ``x-reckon-replays``), persistent, mandatory, on a channel with publisher confirms; only
after the broker confirmed it (and did not return it) is the dead letter acknowledged, i.e.
removed. A crash between the two leaves both copies: replayed messages must be idempotent by
``message_id``, as invoices are. It keeps the letter's ``user_id`` — who first sent it, which
consumers decide by — so it publishes through a connection of **that** user (``publisher``, the
coordinator's for an invoice), and refuses, before publishing, a letter signed by another user than
the publisher's, or one replayed ``max_replays`` times already. The connection that reads may be
another user's (``reckon-operator``, who may read ``billing.dead-letters`` and publish nothing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelAccessRefused

from accounting.dlq.letters import (
    DEFAULT_MAX_REPLAYS,
    DeadLetter,
    dead_letter,
    replay_refusal,
    replayed_headers,
)
from contracts import Topology
from transport.connection import broker_user

MAX_SCAN = 100_000
"""At most this many dead letters are read (and held, by delivery tag) by one command."""

PermissionKind = Literal["configure", "write", "read"]


class DeadLettersMissing(RuntimeError):
    """The namespace has no dead-letters queue (no coordinator ever started in it?)."""


class DeadLettersRefused(RuntimeError):
    """The broker refused what a command asked: the message is one line naming the user, the
    permission and the queue or exchange."""


class UnknownDeadLetters(LookupError):
    """Some of the IDs named no dead letter; nothing was done."""

    def __init__(self, ids: Sequence[str], queue: str) -> None:
        super().__init__(f"no dead letter with ID {', '.join(ids)} in {queue} (see `reckon dlq list`)")
        self.ids = tuple(ids)


def broker_reason(error: BaseException) -> str:
    """The broker's own words for a refusal (``ACCESS_REFUSED - …``), else the error's name and text."""
    first = error.args[0] if error.args else None
    if isinstance(first, str) and first:
        return first
    return f"{type(error).__name__}: {error}"


def refused(error: BaseException, user: str, permission: PermissionKind, kind: str, name: str) -> str:
    """One line: who may not do what where, and the broker's reason."""
    if isinstance(error, ChannelAccessRefused):
        return f"broker user {user} may not {permission} {kind} {name} ({broker_reason(error)})"
    return f"{kind} {name}, as broker user {user}: {broker_reason(error)}"


@dataclass(frozen=True)
class Held:
    """A dead letter read and not acknowledged: its delivery tag, and the message itself only when
    the command keeps its body (to show or replay it)."""

    letter: DeadLetter
    tag: int
    message: AbstractIncomingMessage | None = None


@dataclass(frozen=True)
class ReplayOutcome:
    id: str
    status: Literal["replayed", "returned", "failed"]
    detail: str


def _never(_letter: DeadLetter) -> bool:
    return False


class DeadLetterReader:
    """Holds what it read until ``release``: use it as ``async with await DeadLetterReader.open(...)``."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, namespace: str, user: str) -> None:
        self._channel = channel
        self.queue = queue
        self.user = user
        """The broker user reading (named when the broker refuses)."""
        self._namespace = namespace
        self._held: set[int] = set()
        """Delivery tags read and not yet acknowledged. A ``multiple`` ack or nack must name one of
        these: the broker closes the channel on a tag already acknowledged."""

    @classmethod
    async def open(cls, connection: AbstractConnection, topology: Topology) -> DeadLetterReader:
        name = topology.dead_letters_queue.name
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)  # needs no permission
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise DeadLettersMissing(
                f"no queue {name}: has a coordinator ever started in namespace "
                f"{topology.namespace or '(none)'}?"
            ) from None
        return cls(channel, queue, topology.namespace, broker_user(connection))

    @property
    def held(self) -> int:
        """How many letters are read and not yet acknowledged."""
        return len(self._held)

    async def read(self, keep_body: Callable[[DeadLetter], bool] = _never) -> AsyncIterator[Held]:
        """Every dead letter (up to ``MAX_SCAN``) in queue order, each held unacknowledged, with its
        body only where ``keep_body`` says so. ``basic.get`` until the queue has nothing more to
        give: unlike the queue's message count, that is never behind the broker's own state."""
        read = 0
        while read < MAX_SCAN:
            try:
                message = await self.queue.get(no_ack=False, fail=False)
            except aio_pika.exceptions.AMQPError as error:
                raise DeadLettersRefused(
                    refused(error, self.user, "read", "queue", self.queue.name)
                ) from None
            if message is None:
                return
            read += 1
            assert message.delivery_tag is not None  # not auto-acknowledged
            self._held.add(message.delivery_tag)
            letter = dead_letter(
                message.body,
                message.headers,
                message_id=message.message_id,
                message_type=message.type,
                timestamp=message.timestamp,
                content_type=message.content_type,
                user_id=message.user_id,
                routing_key=message.routing_key,
                namespace=self._namespace,
            )
            keep = keep_body(letter)
            yield Held(
                letter if keep else letter.without_body(), message.delivery_tag, message if keep else None
            )
            del message  # the body goes with it unless kept

    async def _ack(self, tag: int, multiple: bool = False) -> None:
        try:
            channel = await self._channel.get_underlay_channel()
            await channel.basic_ack(tag, multiple=multiple)
        except aio_pika.exceptions.AMQPError as error:
            raise DeadLettersRefused(refused(error, self.user, "read", "queue", self.queue.name)) from None

    async def acknowledge(self, held: Held) -> None:
        """Remove one dead letter for good (after its replay was confirmed, or to purge it)."""
        await self._ack(held.tag)
        self._held.discard(held.tag)

    async def acknowledge_all(self) -> None:
        """Remove every dead letter read so far, in one frame: exactly those, none read since."""
        if self._held:
            await self._ack(max(self._held), multiple=True)
        self._held.clear()

    async def release(self) -> None:
        """Give back everything still held, in one frame, and close the channel."""
        held, self._held = self._held, set()
        if self._channel.is_closed:
            return
        if held:
            channel = await self._channel.get_underlay_channel()
            await channel.basic_nack(max(held), multiple=True, requeue=True)
        await self._channel.close()

    async def __aenter__(self) -> DeadLetterReader:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()


async def list_dead_letters(
    connection: AbstractConnection, topology: Topology, limit: int = MAX_SCAN
) -> tuple[list[DeadLetter], int]:
    """The first ``limit`` dead letters (without their bodies) and how many there are; none is
    consumed. Memory: ``limit`` summaries and one body at a time."""
    letters: list[DeadLetter] = []
    total = 0
    async with await DeadLetterReader.open(connection, topology) as reader:
        async for held in reader.read():
            total += 1
            if len(letters) < limit:
                letters.append(held.letter)
    return letters, total


async def _chosen(reader: DeadLetterReader, ids: Sequence[str]) -> list[Held]:
    """Every held letter named by ``ids``, with its body; ``UnknownDeadLetters`` if an id names none."""
    wanted = set(ids)
    chosen = [
        held async for held in reader.read(lambda letter: letter.id in wanted) if held.letter.id in wanted
    ]
    found = {held.letter.id for held in chosen}
    unknown = [identifier for identifier in dict.fromkeys(ids) if identifier not in found]
    if unknown:
        raise UnknownDeadLetters(unknown, reader.queue.name)
    return chosen


async def find_dead_letters(
    connection: AbstractConnection, topology: Topology, ids: Sequence[str]
) -> list[DeadLetter]:
    """Every dead letter with one of ``ids``, with its body; ``UnknownDeadLetters`` if an id names
    none. Only those bodies are kept."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        return [held.letter for held in await _chosen(reader, ids)]


async def replay_dead_letters(
    connection: AbstractConnection,
    topology: Topology,
    ids: Sequence[str],
    confirm_timeout: float = 10.0,
    *,
    publisher: AbstractConnection | None = None,
    max_replays: int = DEFAULT_MAX_REPLAYS,
) -> list[ReplayOutcome]:
    """Republish each named dead letter where it was first published, through ``publisher`` (the
    connection of the user that first sent it; ``connection`` by default); remove it once confirmed.

    Unknown ids raise ``UnknownDeadLetters`` before anything is republished. A letter signed by
    another user than ``publisher``'s, or replayed ``max_replays`` times already, is left in place.
    """
    sender = publisher or connection
    user = broker_user(sender)
    login = _login(sender)
    async with await DeadLetterReader.open(connection, topology) as reader:
        chosen = await _chosen(reader, ids)
        writer = await sender.channel(publisher_confirms=True)
        try:
            outcomes = []
            for held in chosen:
                refusal = replay_refusal(held.letter, max_replays, login)
                if refusal is not None:
                    outcomes.append(ReplayOutcome(held.letter.id, "failed", f"{refusal}; left in place"))
                    continue
                writer = await _open(sender, writer)
                outcomes.append(await _replay(reader, writer, held, confirm_timeout, user))
            return outcomes
        finally:
            if not writer.is_closed:
                await writer.close()


def _login(connection: AbstractConnection) -> str | None:
    """The user its URL names, or None (a client certificate's, say: then the broker judges)."""
    user = getattr(getattr(connection, "url", None), "user", None)
    return str(user) if user else None


async def _open(connection: AbstractConnection, writer: AbstractChannel) -> AbstractChannel:
    """The publishing channel, opened again if the broker closed it (a missing exchange, say)."""
    return await connection.channel(publisher_confirms=True) if writer.is_closed else writer


async def _replay(
    reader: DeadLetterReader, writer: AbstractChannel, held: Held, confirm_timeout: float, user: str
) -> ReplayOutcome:
    letter, original = held.letter, held.message
    assert original is not None and letter.exchange is not None and letter.routing_key is not None
    target = f"{letter.exchange or '(default exchange)'} / {letter.routing_key}"
    message = aio_pika.Message(
        original.body,
        headers=replayed_headers(original.headers),
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
        name = letter.exchange or "amq.default"
        return ReplayOutcome(
            letter.id, "failed", f"{refused(error, user, 'write', 'exchange', name)}; left in place"
        )
    if isinstance(result, DeliveredMessage):
        return ReplayOutcome(letter.id, "returned", f"{target}: no queue is bound there; left in place")
    await reader.acknowledge(held)
    return ReplayOutcome(
        letter.id,
        "replayed",
        f"to {target} as {user} (replay {letter.replays + 1}), confirmed; removed from dead letters",
    )


@dataclass(frozen=True)
class PurgePlan:
    """What a purge would delete: the letters it read (and holds), in queue order."""

    queue: str
    count: int
    ids: list[str]
    """Their IDs, at most ``MAX_PLAN_IDS`` of them (``count`` says how many there are)."""


MAX_PLAN_IDS = 20


async def purge_dead_letters(
    connection: AbstractConnection,
    topology: Topology,
    ids: Sequence[str] = (),
    confirm: Callable[[PurgePlan], Awaitable[bool]] | None = None,
) -> int | None:
    """Delete the dead letters read now — every one, or those named by ``ids`` — after ``confirm``
    (given what would go) agreed; how many were deleted, or None if it did not. A letter that
    arrives after the listing is never read, so never deleted."""
    async with await DeadLetterReader.open(connection, topology) as reader:
        if ids:
            doomed = await _chosen(reader, ids)
        else:
            doomed = [held async for held in reader.read()]
        shown = [held.letter.id for held in doomed[:MAX_PLAN_IDS]]
        plan = PurgePlan(reader.queue.name, len(doomed), shown)
        if not doomed or (confirm is not None and not await confirm(plan)):
            return None if doomed else 0
        if ids:
            for held in doomed:
                await reader.acknowledge(held)
        else:
            await reader.acknowledge_all()
        return len(doomed)
