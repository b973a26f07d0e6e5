"""Reply intake for the gatherer: what reaches a running gather, and where its replies go.

Each gather has an inbox (``Session``) fed by the reply queue (the AMQP messages, routed by
correlation id), by the broker's confirms (``Asked``) and returns of its requests, by a lost
transport and by the deadline. ``apply`` turns an item into a gather machine event, reading the
message's correlation id, body and broker-verified ``user_id``; ``drain`` counts what is still
queued once the gather is finished. Replies are acknowledged (``ack``) only once stored in the
``GatherSink``. The gatherer that publishes the requests and runs the loop is in ``gatherer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from accounting.core.gather import Gather
from accounting.core.gather_events import Action, GatherEvent, ReplyReceived, StoreChunk
from accounting.infra import metrics
from accounting.infra.clock import Clock
from observability import logs

log = logging.getLogger("reckon.gather")

IGNORED_LOG_SECONDS = 10.0
IGNORED = logs.RateLimitedLog(log, IGNORED_LOG_SECONDS)
"""Warnings about replies that did not count, at most one per sender every 10 s (with how many were
not logged): a flood of forged or stray replies must not flood the log. ``reckon_replies_rejected``
keeps the exact count."""

BATCH_RECORDS = 5000
"""Records written per store transaction while replies stream in (fewer when they trickle)."""
TRANSPORT_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError)


class GatherSink(Protocol):
    """Where a gather's replies go as they arrive: the store, or a list in tests."""

    async def asked(self, requests: Mapping[str, str]) -> None:
        """The broker took these services' requests (service → request id)."""

    async def write(self, actions: Sequence[Action]) -> list[tuple[str, str]]:
        """Store a batch; return ``(service, why)`` for each accepted chunk the store refused."""


@dataclass(frozen=True)
class Asked:
    """The broker confirmed a request: the service was asked."""

    service: str
    request_id: str


Item = AbstractIncomingMessage | GatherEvent | Asked


@dataclass
class Session:
    machine: Gather
    inbox: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    started: float = field(default_factory=time.monotonic)
    settled: set[str] = field(default_factory=set)
    """Services whose answer settled, for the per-service latency (``metrics.settled``)."""


def received_event(message: AbstractIncomingMessage, clock: Clock) -> ReplyReceived:
    """The gather machine's event for a reply message: its body and the properties it checks."""
    return ReplyReceived(
        message.correlation_id,
        message.body,
        clock(),
        message.user_id,
        message.content_type,
        message.content_encoding,
    )


def apply(
    item: Item,
    machine: Gather,
    actions: list[Action],
    messages: list[AbstractIncomingMessage],
    asked: dict[str, str],
    clock: Clock,
) -> None:
    if isinstance(item, Asked):
        machine.request_sent(item.service)
        asked[item.service] = item.request_id
    elif isinstance(item, AbstractIncomingMessage):
        messages.append(item)
        before = metrics.snapshot(machine)
        received = received_event(item, clock)
        actions.extend(machine.handle(received))
        if metrics.reply_handled(machine, before):
            IGNORED.warning(
                f"ignored from {item.user_id!r}",
                "reply %s from user %r ignored (%s)",
                item.correlation_id,
                item.user_id,
                dict(machine.ignored),
            )
    else:
        machine.handle(item)


async def drain(session: Session, clock: Clock) -> None:
    """Replies still queued for a finished gather are late: count and acknowledge them."""
    while not session.inbox.empty():
        item = session.inbox.get_nowait()
        if isinstance(item, Asked):
            session.machine.request_sent(item.service)
        elif isinstance(item, AbstractIncomingMessage):
            late = received_event(item, clock)
            before = metrics.snapshot(session.machine)
            session.machine.handle(late)
            metrics.reply_handled(session.machine, before)
            await ack(item)


def records(actions: Sequence[Action]) -> int:
    return sum(len(action.reply.records) for action in actions if isinstance(action, StoreChunk))


async def ack(message: AbstractIncomingMessage) -> None:
    # After the channel closed there is nothing left to acknowledge: the broker requeued it.
    with contextlib.suppress(*TRANSPORT_ERRORS, RuntimeError):
        await message.ack()
