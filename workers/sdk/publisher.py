"""Publish one answer's replies with publisher confirms, pipelined: a bounded window in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from aiormq.abc import DeliveredMessage

from contracts import CONTENT_TYPE, UsageReply

log = logging.getLogger("reckon.worker")


class PublishFailed(Exception):
    """A reply was not confirmed (channel closed, broker nack, confirm timeout): transport trouble,
    not the service's; the request is requeued, as nothing says the coordinator got the answer."""


class ReplyPublisher:
    """Sends the replies of ONE answer to ``reply_to``, mandatory, each confirmed by the broker.

    ``send`` returns as soon as the reply is written while at most ``window`` replies await their
    confirms; ``flush`` awaits every confirm still due. A returned reply (the coordinator's reply
    queue is gone) sets ``returned``: ``send`` then sends nothing more. Use ``async with``: leaving
    the block cancels confirm waits still pending (only after a failure; normally ``flush`` ran).
    """

    def __init__(
        self,
        exchange: AbstractExchange,
        reply_to: str,
        *,
        window: int,
        timeout: float,
        service: str,
        user_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """``headers`` go on every reply (the ``traceparent`` of the answer)."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._exchange = exchange
        self._reply_to = reply_to
        self._window = window
        self._timeout = timeout
        self._service = service
        self._user_id = user_id
        self._headers: dict[str, Any] | None = dict(headers) if headers else None
        self._in_flight: set[asyncio.Task[object]] = set()
        self.returned = False
        self.sent = 0

    async def __aenter__(self) -> ReplyPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight.clear()

    async def send(self, reply: UsageReply) -> bool:
        """Publish ``reply`` once the window has room; False if the answer must stop (returned)."""
        while len(self._in_flight) >= self._window and not self.returned:
            await self._settle(asyncio.FIRST_COMPLETED)
        if self.returned:
            return False
        body = reply.to_json()
        self._in_flight.add(asyncio.ensure_future(self._publish(body, reply.request_id)))
        self.sent += 1
        return True

    async def flush(self) -> None:
        """Wait until every reply sent so far is confirmed (or returned); ``PublishFailed`` otherwise."""
        while self._in_flight:
            await self._settle(asyncio.FIRST_EXCEPTION)  # all together, but a failure at once

    async def _settle(self, until: str) -> None:
        done, _ = await asyncio.wait(self._in_flight, return_when=until)
        self._in_flight -= done
        failures = [task.exception() for task in done if task.exception() is not None]
        if failures:
            raise PublishFailed(f"a reply to {self._reply_to} was not confirmed: {failures[0]!r}") from (
                failures[0]
            )

    async def _publish(self, body: bytes, request_id: str) -> object:
        result = await self._exchange.publish(
            aio_pika.Message(
                body,
                content_type=CONTENT_TYPE,
                correlation_id=request_id,
                timestamp=datetime.now(UTC),
                # The broker checks it against the connection's user: the coordinator knows who sent it.
                user_id=self._user_id,
                headers=self._headers,
            ),
            routing_key=self._reply_to,
            mandatory=True,
            timeout=self._timeout,
        )
        if isinstance(result, DeliveredMessage) and not self.returned:
            self.returned = True
            log.warning(
                "service %s: reply to %s was returned: the coordinator's reply queue is gone; "
                "the rest of the answer is not sent",
                self._service,
                request_id,
            )
        return result
