"""The aio-pika shell around the gather machine: publish requests, route replies, wait.

As in aio-pika's RPC pattern, one exclusive reply queue serves every gather of this coordinator
instance; replies are routed to their gather by correlation id. Settled gathers stay routable
for a while, so a reply that arrives after the deadline is counted as late, not as unknown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from accounting.core.gather import (
    DeadlinePassed,
    Gather,
    GatherEvent,
    ReplyReceived,
    RequestReturned,
    TransportLost,
    request_ids,
)
from contracts import CONTENT_TYPE, Period, Topology, UsageRequest

log = logging.getLogger("reckon.gather")

Clock = Callable[[], datetime]
ProgressCallback = Callable[[Gather], None]

_MIN_EXPIRATION = timedelta(milliseconds=1)
_SETTLED_KEPT = 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


class TransportClosed(RuntimeError):
    """The gatherer's channel is closed; it cannot send requests any more."""


class UsageGatherer:
    """Asks every configured service for its usage and collects the correlated replies.

    A returned request, a closed channel or connection, or the deadline settles a gather at
    once: nothing waits past its deadline, nothing hangs on a dead connection.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        publish_timeout: float,
        clock: Clock,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._channel: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._routes: OrderedDict[str, tuple[Gather, asyncio.Event]] = OrderedDict()
        self._closed_reason: str | None = None
        self._shut_down = False
        self.unknown_replies = 0

    @classmethod
    async def create(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        publish_timeout: float = 10.0,
        clock: Clock = utc_now,
    ) -> UsageGatherer:
        gatherer = cls(connection, topology, publish_timeout, clock)
        connection.close_callbacks.add(gatherer._on_closed)
        await gatherer._open()
        return gatherer

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel of the current reply queue (None before the first open)."""
        return self._channel

    async def _open(self) -> tuple[AbstractChannel, AbstractQueue]:
        """A fresh channel and reply queue: at start, and after the broker closed the last ones."""
        channel = await self._connection.channel(publisher_confirms=True)
        reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await channel.declare_exchange(self._topology.usage.name, self._topology.usage.kind, durable=True)
        channel.close_callbacks.add(self._on_closed)
        await reply_queue.consume(self._on_reply, no_ack=True)
        self._channel, self._reply_queue, self._closed_reason = channel, reply_queue, None
        return channel, reply_queue

    async def _ready(self) -> tuple[AbstractChannel, AbstractQueue]:
        if self._shut_down:
            raise TransportClosed("the gatherer is closed")
        if (
            self._channel is None
            or self._reply_queue is None
            or self._channel.is_closed
            or self._closed_reason
        ):
            log.warning("reply channel was closed (%s); opening a new one", self._closed_reason or "closed")
            return await self._open()
        return self._channel, self._reply_queue

    async def close(self) -> None:
        self._shut_down = True
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    def _on_closed(self, _sender: Any, error: BaseException | None = None) -> None:
        self._closed_reason = f"{type(error).__name__}: {error}" if error else "channel closed"
        for gather, changed in list(self._routes.values()):
            if not gather.done:
                gather.handle(TransportLost(self._closed_reason, self._clock()))
                changed.set()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        route = self._routes.get(message.correlation_id or "")
        if route is None:
            self.unknown_replies += 1
            log.warning("reply with unknown correlation id %r ignored", message.correlation_id)
            return
        gather, changed = route
        was_done = gather.done
        before = sum(gather.ignored.values())
        gather.handle(ReplyReceived(message.correlation_id, message.body, self._clock()))
        if was_done or sum(gather.ignored.values()) > before:
            log.info("reply %s ignored (%s)", message.correlation_id, dict(gather.ignored))
        changed.set()

    async def gather(
        self,
        report_id: uuid.UUID,
        period: Period,
        services: Sequence[str],
        deadline: datetime,
        on_progress: ProgressCallback | None = None,
    ) -> Gather:
        """Run one gather to its end and return the settled machine."""
        requests = request_ids(services, str(report_id), uuid.uuid4().hex[:8])
        machine = Gather(requests, deadline)
        changed = asyncio.Event()

        def feed(event: GatherEvent) -> None:
            machine.handle(event)
            changed.set()

        for request_id in requests.values():
            self._routes[request_id] = (machine, changed)
        try:
            channel, reply_queue = await self._ready()
            await self._send(channel, reply_queue, report_id, period, requests, deadline, machine, feed)
            await self._wait(machine, changed, feed, on_progress)
        except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError, TransportClosed) as error:
            feed(TransportLost(f"{type(error).__name__}: {error}", self._clock()))
        finally:
            while len(self._routes) > _SETTLED_KEPT:
                self._routes.popitem(last=False)
        if on_progress is not None:
            on_progress(machine)
        return machine

    async def _send(
        self,
        channel: AbstractChannel,
        reply_queue: AbstractQueue,
        report_id: uuid.UUID,
        period: Period,
        requests: dict[str, str],
        deadline: datetime,
        machine: Gather,
        feed: Callable[[GatherEvent], None],
    ) -> None:
        exchange = await channel.get_exchange(self._topology.usage.name, ensure=False)
        for service, request_id in requests.items():
            if machine.done:
                return
            request = UsageRequest(
                request_id=request_id, report_id=report_id, period=period, service=service, deadline=deadline
            )
            returned = await exchange.publish(
                aio_pika.Message(
                    request.to_json(),
                    content_type=CONTENT_TYPE,
                    correlation_id=request_id,
                    message_id=request_id,
                    reply_to=reply_queue.name,
                    expiration=max(deadline - self._clock(), _MIN_EXPIRATION),
                    timestamp=self._clock(),
                ),
                routing_key=service,
                mandatory=True,
                timeout=self._publish_timeout,
            )
            if isinstance(returned, DeliveredMessage):
                feed(RequestReturned(request_id, _reply_text(returned), self._clock()))
            else:
                machine.request_sent(service)
                log.info("report %s: asked %s (%s)", report_id, service, request_id)

    async def _wait(
        self,
        machine: Gather,
        changed: asyncio.Event,
        feed: Callable[[GatherEvent], None],
        on_progress: ProgressCallback | None,
    ) -> None:
        while not machine.done:
            if on_progress is not None:
                on_progress(machine)
            changed.clear()
            remaining = (machine.deadline - self._clock()).total_seconds()
            if remaining <= 0:
                feed(DeadlinePassed(self._clock()))
                return
            try:
                await asyncio.wait_for(changed.wait(), timeout=remaining)
            except TimeoutError:
                continue


def _reply_text(returned: DeliveredMessage) -> str:
    delivery = returned.delivery
    if isinstance(delivery, Basic.Return):
        return f"{delivery.reply_code} {delivery.reply_text}"
    return "returned"
