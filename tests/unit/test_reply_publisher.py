"""The pipelined reply publisher against a fake exchange: window, confirms together, returns, failures."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractExchange
from aiormq.abc import DeliveredMessage

from contracts import Chunk, UsageReply
from workers.sdk.publisher import PublishFailed, ReplyPublisher


def reply(seq: int) -> UsageReply:
    return UsageReply(
        request_id="rep/compute/a1",
        service="compute",
        status="ok",
        chunk=Chunk(seq=seq, last=False, total_records=0),
    )


class FakeExchange:
    """Each publish waits for its confirm, which the test gives (or refuses) by hand."""

    def __init__(self, auto_confirm: bool = False) -> None:
        self.auto_confirm = auto_confirm
        self.confirms: list[asyncio.Future[object]] = []
        self.published = asyncio.Event()
        self.bodies: list[bytes] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def publish(self, message: Any, routing_key: str, **options: Any) -> object:
        assert routing_key == "reply-queue" and options["mandatory"] is True
        self.bodies.append(message.body)
        confirm: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        self.published.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.auto_confirm:
            asyncio.get_running_loop().call_later(0.002, confirm.set_result, "ack")
        try:
            return await confirm
        finally:
            self.in_flight -= 1


async def started(exchange: FakeExchange, count: int) -> None:
    """Let the publish tasks run until ``count`` publishes await their confirm."""
    async with asyncio.timeout(1):
        while len(exchange.confirms) < count:
            exchange.published.clear()
            await exchange.published.wait()


def publisher(exchange: FakeExchange, window: int = 3) -> ReplyPublisher:
    return ReplyPublisher(
        cast(AbstractExchange, exchange), "reply-queue", window=window, timeout=5, service="compute"
    )


async def test_sends_in_order_with_at_most_window_awaiting_confirms() -> None:
    exchange = FakeExchange(auto_confirm=True)
    async with publisher(exchange, window=3) as replies:
        for seq in range(10):
            assert await replies.send(reply(seq))
        await replies.flush()

    assert [UsageReply.from_json(body).chunk.seq for body in exchange.bodies] == list(range(10))
    assert exchange.most_in_flight <= 3
    assert replies.sent == 10 and not replies.returned


async def test_send_waits_for_room_in_the_window() -> None:
    exchange = FakeExchange()
    async with publisher(exchange, window=2) as replies:
        await replies.send(reply(0))
        await replies.send(reply(1))
        await started(exchange, 2)
        third = asyncio.create_task(replies.send(reply(2)))
        await asyncio.sleep(0.01)
        assert not third.done()  # two unconfirmed: no room
        exchange.confirms[0].set_result("ack")
        assert await asyncio.wait_for(third, 1)
        await started(exchange, 3)
        for confirm in exchange.confirms[1:]:
            confirm.set_result("ack")
        await replies.flush()


async def test_a_returned_reply_stops_the_answer() -> None:
    exchange = FakeExchange()
    returned = DeliveredMessage(delivery=None, header=None, body=b"", channel=None)  # type: ignore[arg-type]
    async with publisher(exchange, window=1) as replies:
        await replies.send(reply(0))
        await started(exchange, 1)
        exchange.confirms[0].set_result(returned)
        assert not await replies.send(reply(1))  # the window drained into the return: stop
        await replies.flush()

    assert replies.returned and replies.sent == 1


async def test_an_unconfirmed_reply_is_a_publish_failure() -> None:
    exchange = FakeExchange()
    async with publisher(exchange, window=4) as replies:
        await replies.send(reply(0))
        await replies.send(reply(1))
        await started(exchange, 2)
        exchange.confirms[0].set_exception(ConnectionError("channel closed"))
        with pytest.raises(PublishFailed, match="channel closed"):
            await replies.flush()
    # Leaving the block cancelled the confirm still awaited: nothing is left running.
    assert exchange.in_flight == 0


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be at least 1"):
        publisher(FakeExchange(), window=0)
