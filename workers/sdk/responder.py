"""The aio-pika shell of a sub-service: consume usage requests, stream ``usage(period)``, reply."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Self

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from contracts import QueueSpec, Topology, UsageRequest
from observability import logs, tracing
from transport.connection import broker_user
from transport.queues import wait_for_queue
from workers.sdk import metrics
from workers.sdk.protocol import (
    Chunker,
    Expired,
    Refuse,
    Work,
    deadline_reply,
    decide,
    internal_reply,
)
from workers.sdk.publisher import PublishFailed, ReplyPublisher
from workers.sdk.service import UsageService, usage_stream
from workers.sdk.settings import WorkerSettings

log = logging.getLogger("reckon.worker")

QUEUE_WAIT_LOG_SECONDS = 30.0
"""While waiting for the coordinator to declare this service's queue, a line this often."""


AnswerOutcome = Literal["ok", "error", "returned"]


@dataclass(frozen=True)
class Answer:
    """What one answer sent: ``ok`` (the whole inventory), ``error`` (an error reply, ``error``
    its code, after ``chunks`` chunks of ``records`` records), or ``returned`` (the coordinator's
    reply queue was gone: the rest was not sent)."""

    outcome: AnswerOutcome
    records: int
    chunks: int
    error: str | None = None


class Responder:
    """Serves one ``UsageService`` on its queue ``usage.requests.<name>``.

    Every request gets an answer: the inventory in chunks, sent while ``usage(period)`` produces it
    (at most ``chunk_size`` records buffered, ``publish_window`` chunks awaiting their confirms), or
    an error reply with a code and message. A request is acknowledged only after every reply of it
    is confirmed by the broker (at-least-once).
    """

    def __init__(
        self,
        service: UsageService,
        channel: AbstractChannel,
        queue: AbstractQueue,
        settings: WorkerSettings,
        user: str = "guest",
    ) -> None:
        self.service = service
        self._channel = channel
        self._queue = queue
        self._settings = settings
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task[object]] = set()
        for outcome in ("answered", "refused", "expired", "failed"):
            metrics.REQUESTS.labels(service.name, outcome)  # every series exists from the start, at 0
        self.user = user
        """The broker user this service connects as: its replies carry it as ``user_id``."""

    @classmethod
    async def create(
        cls, connection: AbstractConnection, service: UsageService, settings: WorkerSettings
    ) -> Self:
        """Find this service's queue and start consuming.

        The coordinator declares every configured service's queue and its binding, so a service's
        broker user needs no configure permission (it cannot touch what other services use). With
        one broker user for everything (development) a service that starts first declares its own
        queue; a user that may not waits for the coordinator to declare it.
        """
        topology = Topology(settings.namespace)
        spec = topology.usage_queue(service.name)
        channel = await _consuming_channel(connection, settings)
        try:
            queue = await channel.declare_queue(spec.name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            channel = await _consuming_channel(connection, settings)
            queue = await _declare_own_queue(connection, channel, spec, service.name, settings)
        responder = cls(service, channel, queue, settings, broker_user(connection))
        responder._consumer_tag = await queue.consume(responder.on_message)
        log.info("service %s consuming %s", service.name, spec.name)
        return responder

    @property
    def consuming(self) -> bool:
        """Taking requests: the consumer is registered and its channel open (for readiness)."""
        return self._consumer_tag is not None and not self._channel.is_closed

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        return len(self._in_flight)

    async def close(self, grace: float = 0.0) -> None:
        """Stop consuming, give the answers in flight ``grace`` seconds to finish (each is then
        acknowledged), cancel those still running, and close the channel: every request delivered
        and not acknowledged goes back to the queue, for another replica. Safe to call twice."""
        if self._consumer_tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._consumer_tag)
        self._consumer_tag = None
        if self._in_flight:
            running = set(self._in_flight)
            _, unfinished = await asyncio.wait(running, timeout=grace) if grace > 0 else (set(), running)
            if unfinished:
                log.warning(
                    "service %s: %d answer(s) not finished within %gs: given back to the queue",
                    self.service.name,
                    len(unfinished),
                    grace,
                )
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
        if not self._channel.is_closed:
            await self._channel.close()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika may swallow exceptions raised here, so every failure is logged before it leaves.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        trace = tracing.from_headers(message.headers)
        in_flight = metrics.IN_FLIGHT.labels(self.service.name)
        in_flight.inc()
        try:
            # This answer's span of the request's trace: its id is the parent id on every reply.
            with (
                tracing.traced(trace.child() if trace else None),
                logs.bound(request_id=message.correlation_id),
            ):
                await self._handle(message)
        except Exception:
            metrics.REQUESTS.labels(self.service.name, "failed").inc()
            log.exception(
                "service %s: request %s failed; requeued", self.service.name, message.correlation_id
            )
            if not message.processed and not self._channel.is_closed:
                await message.nack(requeue=True)
        finally:
            in_flight.dec()
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        decision = decide(
            message.body,
            message.correlation_id,
            self.service.name,
            _now(),
            sender=message.user_id,
            coordinator=self._settings.coordinator_user or self.user,
        )
        match decision:
            case Refuse(reply=reply, why=why):
                metrics.REQUESTS.labels(self.service.name, "refused").inc()
                log.error("service %s refused a request: %s", self.service.name, why)
                if reply is not None and message.reply_to:
                    async with self._publisher(message.reply_to) as publisher:
                        await publisher.send(reply)
                        await publisher.flush()
                await message.reject(requeue=False)  # parked in the dead-letter queue for an operator
            case Expired(request=request):
                metrics.REQUESTS.labels(self.service.name, "expired").inc()
                log.warning(
                    "service %s skipped request %s of report %s: its deadline %s has passed",
                    self.service.name,
                    request.request_id,
                    request.report_id,
                    request.deadline.isoformat(),
                )
                await message.ack()
            case Work(request=request):
                if not message.reply_to:
                    log.error("service %s: request %s has no reply_to", self.service.name, request.request_id)
                    await message.reject(requeue=False)
                    return
                started = time.monotonic()
                with logs.bound(report_id=request.report_id):
                    answer = await self._answer(request, message.reply_to)
                    await message.ack()
                    seconds = time.monotonic() - started
                    metrics.REQUESTS.labels(self.service.name, "answered").inc()
                    metrics.ANSWER_SECONDS.labels(self.service.name).observe(seconds)
                    self._answered(request, answer, seconds)

    def _answered(self, request: UsageRequest, answer: Answer, seconds: float) -> None:
        """One INFO line per answer sent (every reply confirmed, the request acknowledged), with
        its request id, service, records, chunks, seconds and outcome as fields (and its report
        and trace id, bound where the request is handled)."""
        with logs.bound(
            service=self.service.name,
            records=answer.records,
            chunks=answer.chunks,
            seconds=round(seconds, 3),
            outcome=answer.outcome,
            error=answer.error,
        ):
            if answer.outcome == "ok":
                how = "answered"
            elif answer.outcome == "error":
                how = f"answered with an error reply ({answer.error})"
            else:
                how = "cut short (a reply was returned: the coordinator's reply queue is gone)"
            log.info(
                "service %s: request %s %s: %d records in %d chunk(s) in %.3fs",
                self.service.name,
                request.request_id,
                how,
                answer.records,
                answer.chunks,
                seconds,
            )

    def _publisher(self, reply_to: str) -> ReplyPublisher:
        return ReplyPublisher(
            self._channel.default_exchange,
            reply_to,
            window=self._settings.publish_window,
            timeout=self._settings.publish_timeout_seconds,
            service=self.service.name,
            user_id=self.user,
            headers=trace.headers() if (trace := tracing.current()) is not None else None,
        )

    async def _answer(self, request: UsageRequest, reply_to: str) -> Answer:
        """Stream the inventory as chunks, or an error reply, and return once all are confirmed.

        Reading and sending must both finish by the request's deadline (else a ``deadline`` error
        reply); an exception from ``usage()`` — even after chunks went out — gives an ``internal``
        error reply. ``PublishFailed`` (transport trouble) propagates: the request is requeued.
        """
        name = self.service.name
        chunker = Chunker(request, self._settings.chunk_size, answer_id=uuid.uuid4().hex)
        async with self._publisher(reply_to) as publisher:
            remaining = (request.deadline - _now()).total_seconds()
            scope = asyncio.timeout(max(remaining, 0))
            try:
                async with scope:
                    await self._stream(request, chunker, publisher)
                outcome: AnswerOutcome = "returned" if publisher.returned else "ok"
                return Answer(outcome, chunker.records_sent, publisher.sent)
            except PublishFailed:
                raise
            except TimeoutError as error:
                if not scope.expired():
                    log.exception("service %s: usage() failed for request %s", name, request.request_id)
                    failure = internal_reply(request, error)
                else:
                    log.error(
                        "service %s: request %s: the answer was not complete by the deadline "
                        "(%d chunk(s) sent)",
                        name,
                        request.request_id,
                        publisher.sent,
                    )
                    failure = deadline_reply(request)
            except Exception as error:
                log.exception(
                    "service %s: usage() failed for request %s after %d chunk(s)",
                    name,
                    request.request_id,
                    publisher.sent,
                )
                failure = internal_reply(request, error)
            await publisher.flush()
            chunks = publisher.sent
            await publisher.send(failure)
            await publisher.flush()
            code = failure.error.code if failure.error is not None else None
            return Answer("error", chunker.records_sent, chunks, code)

    async def _stream(self, request: UsageRequest, chunker: Chunker, publisher: ReplyPublisher) -> None:
        """Send each chunk as soon as it is known not to be the last; stop if a reply is returned."""
        records = usage_stream(self.service.usage(request.period))
        try:
            async for record in records:
                chunk = chunker.add(record)
                if chunk is not None and not await publisher.send(chunk):
                    break
            else:
                await publisher.send(chunker.finish())
            await publisher.flush()
        finally:
            await records.aclose()
            metrics.RECORDS_SENT.labels(self.service.name).inc(chunker.records_sent)


async def _consuming_channel(connection: AbstractConnection, settings: WorkerSettings) -> AbstractChannel:
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=settings.prefetch)
    return channel


async def _declare_own_queue(
    connection: AbstractConnection,
    channel: AbstractChannel,
    spec: QueueSpec,
    name: str,
    settings: WorkerSettings,
) -> AbstractQueue:
    """Declare and bind the queue (development, one broker user), or wait for the coordinator to."""
    try:
        exchange = await channel.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    except aiormq.exceptions.ChannelAccessRefused:
        log.warning(
            "service %s: queue %s does not exist yet and this broker user may not declare it; waiting "
            "for the coordinator to declare it",
            name,
            spec.name,
        )
        while True:
            try:
                await wait_for_queue(connection, spec.name, timeout=QUEUE_WAIT_LOG_SECONDS, poll=1.0)
                break
            except TimeoutError:
                log.warning("service %s: still waiting for queue %s", name, spec.name)
        channel = await _consuming_channel(connection, settings)
        return await channel.declare_queue(spec.name, passive=True)
    except aio_pika.exceptions.ChannelPreconditionFailed as error:
        # Declared by an earlier version with other arguments (a quorum queue, say): the broker
        # refuses to change a queue in place, so keep serving the one that exists.
        log.warning(
            "service %s: queue %s already exists with other arguments (%s); using it as it is "
            "(delete it while the service is stopped to have it declared anew)",
            name,
            spec.name,
            error,
        )
        channel = await _consuming_channel(connection, settings)
        return await channel.declare_queue(spec.name, passive=True)
    await queue.bind(exchange, routing_key=spec.routing_key)
    return queue


def _now() -> datetime:
    return datetime.now(UTC)
