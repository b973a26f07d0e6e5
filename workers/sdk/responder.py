"""The aio-pika shell of a sub-service: consume usage requests, call ``usage(period)``, reply."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage

from contracts import CONTENT_TYPE, ErrorCode, Topology, UsageReply, UsageRequest
from workers.sdk.protocol import Expired, Refuse, Work, decide, error_reply, ok_replies
from workers.sdk.service import UsageService
from workers.sdk.settings import WorkerSettings

log = logging.getLogger("reckon.worker")


class Responder:
    """Serves one ``UsageService`` on its queue ``usage.requests.<name>``.

    Every request gets an answer: the inventory, or an error reply with a code and message.
    A request is acknowledged only after its reply is confirmed by the broker.
    """

    def __init__(
        self, service: UsageService, channel: AbstractChannel, queue: AbstractQueue, settings: WorkerSettings
    ) -> None:
        self.service = service
        self._channel = channel
        self._queue = queue
        self._settings = settings
        self._consumer_tag: str | None = None

    @classmethod
    async def create(
        cls, connection: AbstractConnection, service: UsageService, settings: WorkerSettings
    ) -> Responder:
        """Declare this service's queue (idempotently) and start consuming."""
        topology = Topology(settings.namespace)
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=settings.prefetch)
        spec = topology.usage_queue(service.name)
        exchange = await channel.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        await queue.bind(exchange, routing_key=spec.routing_key)
        responder = cls(service, channel, queue, settings)
        responder._consumer_tag = await queue.consume(responder.on_message)
        log.info("service %s consuming %s", service.name, spec.name)
        return responder

    async def close(self) -> None:
        """Stop consuming and close the channel; safe to call twice."""
        if self._consumer_tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._consumer_tag)
        self._consumer_tag = None
        if not self._channel.is_closed:
            await self._channel.close()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika may swallow exceptions raised here, so every failure is logged before it leaves.
        try:
            await self._handle(message)
        except Exception:
            log.exception(
                "service %s: request %s failed; requeued", self.service.name, message.correlation_id
            )
            if not message.processed and not self._channel.is_closed:
                await message.nack(requeue=True)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        decision = decide(message.body, message.correlation_id, self.service.name, _now())
        match decision:
            case Refuse(reply=reply, why=why):
                log.error("service %s refused a request: %s", self.service.name, why)
                if reply is not None and message.reply_to:
                    await self._publish([reply], message.reply_to)
                await message.reject(requeue=False)  # parked in the dead-letter queue for an operator
            case Expired(request=request):
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
                replies = await self._answer(request)
                await self._publish(replies, message.reply_to)
                await message.ack()

    async def _answer(self, request: UsageRequest) -> list[UsageReply]:
        """Run ``usage(period)`` within the request's deadline; any failure becomes an error reply."""
        name = self.service.name
        remaining = (request.deadline - _now()).total_seconds()
        try:
            async with asyncio.timeout(max(remaining, 0)):
                records = await self.service.usage(request.period)
        except TimeoutError:
            text = f"usage for period {request.period.period_id} was not ready by the deadline"
            log.error("service %s: request %s: %s", name, request.request_id, text)
            return [error_reply(request.request_id, name, "deadline", text, retryable=True)]
        except Exception as error:
            log.exception("service %s: usage() failed for request %s", name, request.request_id)
            text = f"{type(error).__name__}: {error}"
            return [error_reply(request.request_id, name, ErrorCode.INTERNAL, text)]
        return ok_replies(request, records, self._settings.chunk_size)

    async def _publish(self, replies: list[UsageReply], reply_to: str) -> None:
        for reply in replies:
            result = await self._channel.default_exchange.publish(
                aio_pika.Message(
                    reply.to_json(),
                    content_type=CONTENT_TYPE,
                    correlation_id=reply.request_id,
                    timestamp=_now(),
                ),
                routing_key=reply_to,
                mandatory=True,
                timeout=self._settings.publish_timeout_seconds,
            )
            if isinstance(result, DeliveredMessage):
                log.warning(
                    "service %s: reply to %s was returned: the coordinator's reply queue is gone",
                    self.service.name,
                    reply.request_id,
                )
                return


def _now() -> datetime:
    return datetime.now(UTC)
