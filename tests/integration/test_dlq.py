"""Dead letters on the real broker: messages dead-lettered the real way, then listed, shown,
replayed and purged — listing consumes nothing and keeps the order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology
from accounting.dlq.letters import DeadLetter
from accounting.dlq.queue import (
    DeadLetterReader,
    DeadLettersMissing,
    UnknownDeadLetters,
    find_dead_letters,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from contracts import CONTENT_TYPE, ROUTING_INVOICE_ISSUED, ROUTING_PERIOD_CLOSED, Topology
from tests.integration.support import coordinator, eventually
from transport.queues import declare_queue

pytestmark = pytest.mark.integration

SENT_AT = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)


@pytest.fixture
async def channel(connection: AbstractRobustConnection, topology: Topology) -> AsyncIterator[AbstractChannel]:
    """A confirming channel, with the coordinator's exchanges and queues declared."""
    channel = await connection.channel(publisher_confirms=True)
    await declare_coordinator_topology(channel, topology)
    yield channel
    await channel.close()


async def publish(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str,
    **properties: object,
) -> None:
    target = await channel.get_exchange(exchange)
    await target.publish(
        aio_pika.Message(
            body,
            message_id=message_id,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=SENT_AT,
            **properties,  # type: ignore[arg-type]
        ),
        routing_key,
        mandatory=True,
    )


async def reject_from_payments(channel: AbstractChannel, topology: Topology, count: int) -> None:
    """Take ``count`` messages from payments.invoices and reject them without requeue, as the
    payment consumer does with an invalid one: the quorum queue dead-letters them."""
    queue = await channel.get_queue(topology.payments_queue.name)
    for _ in range(count):
        message = await queue.get(timeout=5)
        await message.reject(requeue=False)


async def dead_letters(
    connection: AbstractRobustConnection, topology: Topology, count: int
) -> list[DeadLetter]:
    async def arrived() -> bool:
        return (await list_dead_letters(connection, topology))[1] >= count

    await eventually(arrived, timeout=15)
    letters, total = await list_dead_letters(connection, topology)
    assert total == count
    return letters


async def test_an_invalid_period_closed_rejected_by_the_coordinator_is_listed_with_its_x_death(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    async with coordinator(amqp_url, topology, ["compute"]):
        await publish(
            channel, topology.periods.name, ROUTING_PERIOD_CLOSED, b'{"period": "last"}', "bad-period",
            type="PeriodClosed",
        )  # fmt: skip
        [letter] = await dead_letters(connection, topology, 1)

    assert letter.id == "bad-period"
    assert letter.queue == topology.period_closed_queue.name
    assert (letter.exchange, letter.routing_key) == (topology.periods.name, ROUTING_PERIOD_CLOSED)
    assert (letter.reason, letter.count) == ("rejected", 1)
    assert (letter.type, letter.timestamp, letter.body_size) == ("PeriodClosed", SENT_AT, 18)
    assert letter.died_at is not None
    [shown] = await find_dead_letters(connection, topology, ["bad-period"])
    assert shown.body == b'{"period": "last"}'


async def test_an_expired_usage_request_is_listed_as_expired(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    await declare_queue(channel, topology.usage_queue("ghost"))  # a service that never answers
    await publish(channel, topology.usage.name, "ghost", b"{}", "req-1", expiration=0.05, type="UsageRequest")

    [letter] = await dead_letters(connection, topology, 1)

    assert (letter.id, letter.reason, letter.queue) == (
        "req-1",
        "expired",
        topology.usage_queue("ghost").name,
    )
    assert (letter.exchange, letter.routing_key) == (topology.usage.name, "ghost")


async def test_listing_consumes_nothing_and_keeps_the_order(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    for number in range(5):
        await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", f"inv-{number}")
    await reject_from_payments(channel, topology, 5)
    expected = [f"inv-{number}" for number in range(5)]

    first = await dead_letters(connection, topology, 5)
    again, total = await list_dead_letters(connection, topology)
    some, total_when_limited = await list_dead_letters(connection, topology, limit=2)
    shown = await find_dead_letters(connection, topology, ["inv-3"])
    after, total_after = await list_dead_letters(connection, topology)

    assert [letter.id for letter in first] == expected
    assert ([letter.id for letter in again], total) == (expected, 5)
    assert ([letter.id for letter in some], total_when_limited) == (expected[:2], 5)
    assert [letter.id for letter in shown] == ["inv-3"]
    assert ([letter.id for letter in after], total_after) == (expected, 5)
    assert after[0].reads > first[0].reads  # the broker counted the reads; nothing was lost


async def test_replay_delivers_to_the_original_queue_once_with_its_properties_and_removes_the_dead_letter(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    for name in ("keep", "replay-me"):
        await publish(
            channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, json.dumps({"n": name}).encode(), name,
            type="InvoiceIssued", headers={"trace": "t-1"},
        )  # fmt: skip
    await reject_from_payments(channel, topology, 2)
    await dead_letters(connection, topology, 2)

    [outcome] = await replay_dead_letters(connection, topology, ["replay-me"])

    assert (outcome.id, outcome.status) == ("replay-me", "replayed")
    remaining, total = await list_dead_letters(connection, topology)
    assert ([letter.id for letter in remaining], total) == (["keep"], 1)
    payments = await channel.get_queue(topology.payments_queue.name)
    message = await payments.get(timeout=5)
    await message.ack()
    assert (message.message_id, message.type, message.content_type) == (
        "replay-me",
        "InvoiceIssued",
        CONTENT_TYPE,
    )
    assert (message.body, message.timestamp) == (b'{"n": "replay-me"}', SENT_AT)
    assert message.delivery_mode is aio_pika.DeliveryMode.PERSISTENT
    assert message.headers.get("trace") == "t-1"
    assert not any(key.startswith(("x-death", "x-first-death", "x-last-death")) for key in message.headers)
    assert await payments.get(fail=False) is None


async def test_a_returned_replay_leaves_the_dead_letter_where_it_is(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", "orphan")
    await reject_from_payments(channel, topology, 1)
    await dead_letters(connection, topology, 1)
    payments = await channel.get_queue(topology.payments_queue.name)
    await payments.unbind(topology.invoices.name, ROUTING_INVOICE_ISSUED)  # nothing routes it now

    [outcome] = await replay_dead_letters(connection, topology, ["orphan"])

    assert outcome.status == "returned"
    assert "no queue is bound" in outcome.detail
    remaining, total = await list_dead_letters(connection, topology)
    assert ([letter.id for letter in remaining], total) == (["orphan"], 1)


async def test_unknown_ids_are_named_and_nothing_is_replayed(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", "known")
    await reject_from_payments(channel, topology, 1)
    await dead_letters(connection, topology, 1)

    with pytest.raises(UnknownDeadLetters) as raised:
        await replay_dead_letters(connection, topology, ["known", "nope-1", "nope-2"])

    assert raised.value.ids == ("nope-1", "nope-2")
    assert "nope-1, nope-2" in str(raised.value)
    assert (await list_dead_letters(connection, topology))[1] == 1


async def test_purge_deletes_every_dead_letter(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    for number in range(3):
        await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", f"p-{number}")
    await reject_from_payments(channel, topology, 3)
    await dead_letters(connection, topology, 3)

    assert await purge_dead_letters(connection, topology) == 3
    assert await list_dead_letters(connection, topology) == ([], 0)


async def test_after_the_last_letter_read_is_removed_the_rest_are_removed_or_given_back_on_an_open_channel(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    """A multiple ack or nack naming a tag already acknowledged makes the broker close the channel
    (PRECONDITION_FAILED); its late close-ok then broke the next channel opened with that number."""
    for number in range(4):
        await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", f"t-{number}")
    await reject_from_payments(channel, topology, 4)
    await dead_letters(connection, topology, 4)

    async with await DeadLetterReader.open(connection, topology) as reader:
        held = [letter async for letter in reader.read()]
        await reader.acknowledge(held[-1])
        await reader.acknowledge_all()
        assert await reader.queue.get(fail=False) is None  # a round trip: the channel is still open
    assert await list_dead_letters(connection, topology) == ([], 0)

    for number in range(2):
        await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", f"g-{number}")
    await reject_from_payments(channel, topology, 2)
    await dead_letters(connection, topology, 2)
    closed_because: list[BaseException | None] = []
    async with await DeadLetterReader.open(connection, topology) as reader:
        reader.queue.channel.close_callbacks.add(lambda _channel, why: closed_because.append(why))
        held = [letter async for letter in reader.read()]
        await reader.acknowledge(held[-1])
    assert [type(why) for why in closed_because] == [aio_pika.exceptions.ChannelClosed]
    letters, total = await list_dead_letters(connection, topology)
    assert ([letter.id for letter in letters], total) == (["g-0"], 1)


async def test_a_namespace_without_dead_letters_queue_is_one_clear_error(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    with pytest.raises(DeadLettersMissing, match=r"no queue .*billing\.dead-letters"):
        await list_dead_letters(connection, topology)


async def test_a_replay_to_an_exchange_that_is_gone_fails_and_leaves_the_dead_letter(
    connection: AbstractRobustConnection, topology: Topology, channel: AbstractChannel
) -> None:
    for name in ("first", "second"):
        await publish(channel, topology.invoices.name, ROUTING_INVOICE_ISSUED, b"{}", name)
    await reject_from_payments(channel, topology, 2)
    await dead_letters(connection, topology, 2)
    await channel.exchange_delete(topology.invoices.name)

    outcomes = await replay_dead_letters(connection, topology, ["first", "second"])

    assert [(outcome.id, outcome.status) for outcome in outcomes] == [
        ("first", "failed"),
        ("second", "failed"),
    ]
    assert "NOT_FOUND" in outcomes[0].detail
    remaining, total = await list_dead_letters(connection, topology)
    assert ([letter.id for letter in remaining], total) == (["first", "second"], 2)
