"""A sub-service, run as its own process, that floods one period's request with empty chunks.

``python -m bench.flood_service URL NAMESPACE SERVICE PERIOD CHUNKS``: for a request of
PERIOD it publishes CHUNKS empty chunks, none of them last, as fast as the broker takes them, then
prints ``flooded``; any other request gets one empty last chunk at once (requests are handled
concurrently, as the SDK's would be for two reports). It prints ``ready`` once it consumes.
"""

from __future__ import annotations

import asyncio
import sys

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from contracts import CONTENT_TYPE, Chunk, Topology, UsageReply, UsageRequest

PIPELINES = 8


def reply(request: UsageRequest, seq: int, last: bool) -> bytes:
    return UsageReply(
        request_id=request.request_id,
        service=request.service,
        status="ok",
        records=(),
        chunk=Chunk(seq=seq, last=last, total_records=0),
    ).to_json()


async def main(url: str, namespace: str, service: str, flooded_period: str, chunks: int) -> None:
    connection = await aio_pika.connect(url)
    user = connection.url.user
    channel = await connection.channel()
    spec = Topology(namespace).usage_queue(service)
    exchange = await channel.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    await queue.bind(exchange, spec.routing_key)

    async def flood(request: UsageRequest, reply_to: str) -> None:
        bodies = [reply(request, seq, last=False) for seq in range(chunks)]
        flooding = await (await connection.channel(publisher_confirms=False)).get_underlay_channel()
        properties = Basic.Properties(
            content_type=CONTENT_TYPE, correlation_id=request.request_id, user_id=user
        )

        async def pipeline(first: int) -> None:
            for body in bodies[first::PIPELINES]:
                await flooding.basic_publish(body, routing_key=reply_to, properties=properties)

        await asyncio.gather(*(pipeline(first) for first in range(PIPELINES)))
        print("flooded", flush=True)

    async def handle(message: AbstractIncomingMessage) -> None:
        request = UsageRequest.from_json(message.body)
        assert message.reply_to is not None
        if request.period.period_id == flooded_period:
            await flood(request, message.reply_to)
        else:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    reply(request, 0, last=True),
                    content_type=CONTENT_TYPE,
                    correlation_id=request.request_id,
                    user_id=user,
                ),
                routing_key=message.reply_to,
            )
        await message.ack()

    await queue.consume(handle)
    print("ready", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    url, namespace, service, period, chunks = sys.argv[1:]
    asyncio.run(main(url, namespace, service, period, int(chunks)))
