"""The aio-pika shell around the gather machine: publish requests, route replies, store them, wait.

As in aio-pika's RPC pattern, replies come back to a queue of the coordinator's own and are
routed to their gather by correlation id; unlike it, each gather has its own exclusive reply
queue and consumer, each with the channel's per-consumer prefetch. So a service that floods one
report with replies queues them behind nothing but that report's own: a concurrent report's
replies are taken at once (the fairness test in ``tests/integration/test_reply_fairness.py``).
Replies are acknowledged only once stored, so the coordinator holds a few chunks per gather at a
time however large the answers. A finished gather's queue is kept for ``late_seconds`` so a
reply that arrives after the deadline is counted as late, not unknown; then it is deleted, and a
service still answering is told by the broker (its mandatory reply is returned) and stops.

Here: the channel, the requests, routing a reply to its gather, and the loop that runs one gather
to its end. Each gather's reply queue (the spare, the late window) is ``reply_queues``'s; a
gather's inbox, applying its items to the machine and acknowledging replies are in ``replies``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from accounting.amqp.replies import (
    BATCH_RECORDS,
    IGNORED,
    TRANSPORT_ERRORS,
    Asked,
    GatherSink,
    Item,
    Session,
    ack,
    apply,
    drain,
    received_event,
    records,
)
from accounting.amqp.reply_queues import LATE_SECONDS, Consumer, ReplyQueues
from accounting.core.gather import Gather
from accounting.core.gather_events import (
    Action,
    ChunkRefused,
    DeadlinePassed,
    NoConsumer,
    RequestReturned,
    TransportLost,
)
from accounting.core.gather_limits import DEFAULT_LIMITS, ReplyLimits
from accounting.infra import metrics
from accounting.infra.clock import Clock, utc_now
from contracts import CONTENT_TYPE, Period, Topology, UsageRequest
from observability import tracing
from transport.connection import broker_user
from transport.queues import QueueProbe

log = logging.getLogger("reckon.gather")

ProgressCallback = Callable[[Gather], None]
AbortCallback = Callable[[Gather], Awaitable[None]]

_MIN_EXPIRATION = timedelta(milliseconds=1)
_SETTLED_KEPT = 1024


def request_ids(services: Sequence[str]) -> dict[str, str]:
    """A random correlation id per request: no service can derive another service's (they used to
    share the report's id), and a straggling reply to an earlier attempt never matches this one."""
    return {service: uuid.uuid4().hex for service in services}


class TransportClosed(RuntimeError):
    """The gatherer's channel is closed; it cannot send requests any more."""


class UsageGatherer:
    """Asks every configured service for its usage and stores the correlated replies as they come.

    A returned request, a closed channel or connection, or the deadline settles a gather at
    once: nothing waits past its deadline, nothing hangs on a dead connection.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        publish_timeout: float,
        clock: Clock,
        prefetch: int,
        senders: Mapping[str, str] | None = None,
        limits: ReplyLimits = DEFAULT_LIMITS,
        late_seconds: float = LATE_SECONDS,
    ) -> None:
        self._connection = connection
        self.user = broker_user(connection)
        """The broker user this coordinator connects as: its requests carry it as ``user_id``."""
        self._service_users = dict(senders or {})
        self._limits = limits
        self._topology = topology
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._reply_queues = ReplyQueues(self._on_reply, late_seconds)
        self._routes: dict[str, Session] = {}
        self._settled: OrderedDict[str, Gather] = OrderedDict()
        self._closed_reason: str | None = None
        self._shut_down = False
        self._probe = QueueProbe(connection)
        """Looks at each service's queue before its request is sent (does anything consume it?)."""
        self.unknown_replies = 0

    @classmethod
    async def create(
        cls,
        connection: AbstractConnection,
        topology: Topology,
        publish_timeout: float = 10.0,
        clock: Clock = utc_now,
        prefetch: int = 64,
        senders: Mapping[str, str] | None = None,
        limits: ReplyLimits = DEFAULT_LIMITS,
        late_seconds: float = LATE_SECONDS,
    ) -> UsageGatherer:
        """``senders`` maps a service to the broker user allowed to answer for it; a service not
        named there must answer as this coordinator's own user (one user for everything: a
        development setup)."""
        gatherer = cls(connection, topology, publish_timeout, clock, prefetch, senders, limits, late_seconds)
        connection.close_callbacks.add(gatherer._on_closed)
        await gatherer._open()
        return gatherer

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel of the requests and reply queues (None before the first open)."""
        return self._channel

    async def _open(self) -> AbstractChannel:
        """A fresh channel: at start, and after the broker closed the last one."""
        channel = await self._connection.channel(publisher_confirms=True)
        # Per consumer (RabbitMQ's default for basic.qos): each gather's reply queue has its own window.
        await channel.set_qos(prefetch_count=self._prefetch)
        await channel.declare_exchange(self._topology.usage.name, self._topology.usage.kind, durable=True)
        channel.close_callbacks.add(self._on_closed)
        self._channel, self._closed_reason = channel, None
        return channel

    async def _ready(self) -> AbstractChannel:
        if self._shut_down:
            raise TransportClosed("the gatherer is closed")
        if self._channel is None or self._channel.is_closed or self._closed_reason:
            # With its connection (a broker restart, already logged once for the connection) this
            # is routine; a channel closed on its own (a channel error) is worth a warning.
            level = logging.INFO if "CONNECTION_FORCED" in (self._closed_reason or "") else logging.WARNING
            log.log(
                level, "reply channel was closed (%s); opening a new one", self._closed_reason or "closed"
            )
            return await self._open()
        return self._channel

    def reply_queues(self) -> list[str]:
        """The reply queues of the gathers running now (what a forger would have to learn)."""
        return self._reply_queues.names()

    async def close(self) -> None:
        self._shut_down = True
        await self._reply_queues.close()
        await self._probe.close()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()  # its exclusive reply queues go with it

    def _senders(self, services: Sequence[str]) -> dict[str, str]:
        return {service: self._service_users.get(service, self.user) for service in services}

    def _on_closed(self, _sender: Any, error: BaseException | None = None) -> None:
        self._reply_queues.lost()
        self._closed_reason = f"{type(error).__name__}: {error}" if error else "channel closed"
        lost = TransportLost(self._closed_reason, self._clock())
        for session in {id(session): session for session in self._routes.values()}.values():
            session.inbox.put_nowait(lost)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        session = self._routes.get(correlation_id)
        if session is not None:
            session.inbox.put_nowait(message)  # acknowledged once stored
            return
        settled = self._settled.get(correlation_id)
        if settled is None:
            self.unknown_replies += 1
            metrics.REPLIES_REJECTED.labels("unknown_correlation").inc()
            IGNORED.warning(
                f"unknown correlation from {message.user_id!r}",
                "reply with unknown correlation id %r from broker user %r ignored",
                message.correlation_id,
                message.user_id,
            )
        else:
            before = metrics.snapshot(settled)
            settled.handle(received_event(message, self._clock))
            metrics.reply_handled(settled, before)
            log.info("reply %s ignored (%s)", correlation_id, dict(settled.ignored))
        await ack(message)

    async def gather(
        self,
        report_id: uuid.UUID,
        period: Period,
        services: Sequence[str],
        deadline: datetime,
        sink: GatherSink,
        on_progress: ProgressCallback | None = None,
        on_abort: AbortCallback | None = None,
    ) -> Gather:
        """Run one gather until it is finished and return the machine.

        ``on_abort`` is awaited as soon as the report is decided aborted; the gather then goes on
        storing the other services' answers until they are all in or the deadline passes.
        """
        requests = request_ids(services)
        session = Session(Gather(requests, deadline, senders=self._senders(services), limits=self._limits))
        for request_id in requests.values():
            self._routes[request_id] = session
        sends: list[asyncio.Task[None]] = []
        consumer: Consumer | None = None
        try:
            try:
                channel = await self._ready()
                consumer = await self._reply_queues.take(channel)
                reply_queue = consumer[0]
                exchange = await channel.get_exchange(self._topology.usage.name, ensure=False)
            except (*TRANSPORT_ERRORS, TransportClosed) as error:
                session.inbox.put_nowait(TransportLost(f"{type(error).__name__}: {error}", self._clock()))
            else:
                message = partial(self._request, report_id, period, deadline, reply_queue.name)
                sends = [
                    asyncio.create_task(self._ask(session, exchange, service, request_id, message))
                    for service, request_id in requests.items()
                ]
            await self._collect(session, sink, on_progress, on_abort)
        finally:
            for send in sends:
                send.cancel()  # still awaiting a confirm, but every answer is in: it was routed
            await asyncio.gather(*sends, return_exceptions=True)
            for request_id in requests.values():
                self._routes.pop(request_id, None)
                self._settled[request_id] = session.machine
            while len(self._settled) > _SETTLED_KEPT:
                self._settled.popitem(last=False)
            await drain(session, self._clock)
            if consumer is not None:
                self._reply_queues.retire(consumer)
        if on_progress is not None:
            on_progress(session.machine)
        return session.machine

    def _request(
        self,
        report_id: uuid.UUID,
        period: Period,
        deadline: datetime,
        reply_to: str,
        service: str,
        request_id: str,
    ) -> aio_pika.Message:
        request = UsageRequest(
            request_id=request_id, report_id=report_id, period=period, service=service, deadline=deadline
        )
        return aio_pika.Message(
            request.to_json(),
            content_type=CONTENT_TYPE,
            correlation_id=request_id,
            message_id=request_id,
            reply_to=reply_to,
            expiration=max(deadline - self._clock(), _MIN_EXPIRATION),
            timestamp=self._clock(),
            user_id=self.user,
            # The report's trace (from PeriodClosed, else derived from the report id), a span per request.
            headers=(tracing.current() or tracing.TraceContext.for_report(report_id)).child().headers(),
        )

    async def _ask(
        self,
        session: Session,
        exchange: AbstractExchange,
        service: str,
        request_id: str,
        message: Callable[[str, str], aio_pika.Message],
    ) -> None:
        """Publish one request; its confirm (or return) is fed to the gather like any reply, so
        replies are taken while confirms are still on their way: every request goes out at once."""
        try:
            queue = self._topology.usage_queue(service).name
            if not await self._probe.consumers(queue):
                # Nothing would take the request before its deadline: fail now, as for a return.
                session.inbox.put_nowait(NoConsumer(request_id, queue, self._clock()))
                return
            returned = await exchange.publish(
                message(service, request_id),
                routing_key=service,
                mandatory=True,
                timeout=self._publish_timeout,
            )
        except TRANSPORT_ERRORS as error:
            session.inbox.put_nowait(TransportLost(f"{type(error).__name__}: {error}", self._clock()))
            return
        if isinstance(returned, DeliveredMessage):
            session.inbox.put_nowait(RequestReturned(request_id, _reply_text(returned), self._clock()))
        else:
            session.inbox.put_nowait(Asked(service, request_id))

    async def _collect(
        self,
        session: Session,
        sink: GatherSink,
        on_progress: ProgressCallback | None,
        on_abort: AbortCallback | None,
    ) -> None:
        machine = session.machine
        announced = False
        while True:
            actions: list[Action] = []
            messages: list[AbstractIncomingMessage] = []
            asked: dict[str, str] = {}
            if not machine.finished:
                apply(await self._next(session), machine, actions, messages, asked, self._clock)
                while not session.inbox.empty() and records(actions) < BATCH_RECORDS:
                    apply(session.inbox.get_nowait(), machine, actions, messages, asked, self._clock)
            try:
                if asked:
                    await sink.asked(asked)
                if actions:
                    for service, why in await sink.write(actions):
                        machine.handle(ChunkRefused(service, why, self._clock()))
            finally:
                # Stored, or the gather is failing with the store's error: either way the broker
                # must not keep them unacknowledged, holding the reply queue's prefetch.
                for message in messages:
                    await ack(message)
            metrics.settled(machine, session.settled, time.monotonic() - session.started)
            if on_progress is not None:
                on_progress(machine)
            if machine.decided and machine.reasons and not announced:
                announced = True
                if on_abort is not None:
                    await on_abort(machine)
            if machine.finished:
                return

    async def _next(self, session: Session) -> Item:
        remaining = (session.machine.deadline - self._clock()).total_seconds()
        if remaining <= 0:
            return DeadlinePassed(self._clock())
        try:
            return await asyncio.wait_for(session.inbox.get(), timeout=remaining)
        except TimeoutError:
            return DeadlinePassed(self._clock())


def _reply_text(returned: DeliveredMessage) -> str:
    delivery = returned.delivery
    if isinstance(delivery, Basic.Return):
        return f"{delivery.reply_code} {delivery.reply_text}"
    return "returned"
