"""``reckon dlq …`` as deployed: each command a real process (``python -m accounting.cli dlq``) run as
the broker user deploy/README.md's runbook names, with exactly the permissions of
deploy/dev-infra/rabbitmq/definitions.json (``role()``): ``reckon-operator`` reads the dead letters;
a replay publishes as the coordinator (``RECKON_DLQ_REPLAY_URL``), so the payment consumer, which
takes invoices only from the coordinator's user, accepts the replayed invoice.

Also: nobody but the broker (and the coordinator) may publish to the dead-letter exchange, so a
worker cannot plant a dead letter, yet its rejections are still dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection, FieldValue
from aiormq.exceptions import ChannelAccessRefused

from accounting.amqp.topology import declare_coordinator_topology
from accounting.dlq.letters import PREVIEW_BYTES, SHOW_BYTES
from accounting.dlq.queue import list_dead_letters
from contracts import CONTENT_TYPE, ROUTING_INVOICE_ISSUED, InvoiceIssued, Topology
from payments.consumer import PaymentConsumer
from tests.integration.support import eventually
from tests.integration.test_least_privilege import role
from tests.invoices import sample_invoice
from transport.queues import declare_queue

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def environment(url: str, topology: Topology, **extra: str) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_DLQ_")}
    return {
        **inherited,
        "AMQP_URL": url,
        "RECKON_NAMESPACE": topology.namespace,
        "COLUMNS": "300",
        **extra,
    }


async def dlq(url: str, topology: Topology, *args: str, env: dict[str, str] | None = None) -> Result:
    """``reckon dlq ARGS`` as the broker user of ``url``; ``env``: more environment."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "dlq", *args,
        env=environment(url, topology, **(env or {})), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def one_line(result: Result) -> str:
    """A failure is one line on stderr (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def declare_topology(connection: AbstractRobustConnection, topology: Topology) -> None:
    """The coordinator's exchanges and queues, as it declares them at start."""
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)


async def publish_invoice(url: str, topology: Topology, invoice: InvoiceIssued, user: str) -> None:
    """As the relay does, as the coordinator's broker user (``user_id`` = that user)."""
    connection = await aio_pika.connect_robust(url)
    try:
        async with connection.channel(publisher_confirms=True) as channel:
            exchange = await channel.get_exchange(topology.invoices.name)
            await exchange.publish(
                aio_pika.Message(
                    invoice.to_json(),
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=str(invoice.invoice_id),
                    type="InvoiceIssued",
                    user_id=user,
                ),
                ROUTING_INVOICE_ISSUED,
                mandatory=True,
            )
    finally:
        await connection.close()


class Payments:
    """An ``on_invoice`` that fails (the payment provider is down) until ``fixed``."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, invoice: InvoiceIssued) -> None:
        if not self.fixed:
            raise ConnectionError("payment provider unreachable")


@asynccontextmanager
async def payment_consumer(
    url: str, topology: Topology, handler: Payments, coordinator: str
) -> AsyncIterator[PaymentConsumer]:
    """The reference payment consumer as reckon-payments, taking invoices only from ``coordinator``."""
    connection = await aio_pika.connect_robust(url)
    try:
        consumer = await PaymentConsumer.start(connection, topology, handler, publisher=coordinator)
        try:
            yield consumer
        finally:
            await consumer.stop()
    finally:
        await connection.close()


async def parked(connection: AbstractRobustConnection, topology: Topology, count: int) -> None:
    async def arrived() -> bool:
        return (await list_dead_letters(connection, topology))[1] == count

    await eventually(arrived, timeout=20)


async def listed(url: str, topology: Topology) -> list[dict[str, object]]:
    result = await dlq(url, topology, "list", "--json")
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, object]] = json.loads(result.stdout)
    return letters


async def test_a_parked_invoice_is_listed_shown_and_replayed_as_the_coordinator_and_paid(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    invoice = sample_invoice("acme")
    invoice_id = str(invoice.invoice_id)
    handler = Payments()
    await declare_topology(connection, topology)
    with (
        role(amqp_url, topology, "reckon-operator") as (_, operator),
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator),
        role(amqp_url, topology, "reckon-payments") as (_, payments),
    ):
        as_coordinator = {"RECKON_DLQ_REPLAY_URL": coordinator, "RECKON_DLQ_MAX_REPLAYS": "1"}
        async with payment_consumer(payments, topology, handler, coordinator_user) as failing:
            await publish_invoice(coordinator, topology, invoice, coordinator_user)
            await eventually(lambda: failing.parked == 1, timeout=20)
            await parked(connection, topology, 1)

        [letter] = await listed(operator, topology)
        table = await dlq(operator, topology, "list")
        shown = await dlq(operator, topology, "show", invoice_id, "--json")
        as_the_coordinator = await dlq(coordinator, topology, "list")
        unsigned = await dlq(operator, topology, "replay", invoice_id)  # no RECKON_DLQ_REPLAY_URL
        replayed = await dlq(operator, topology, "replay", invoice_id, env=as_coordinator)
        async with payment_consumer(payments, topology, handler, coordinator_user) as failing_again:
            await eventually(lambda: failing_again.parked == 1, timeout=20)
            await parked(connection, topology, 1)
        [again] = await listed(operator, topology)
        too_often = await dlq(operator, topology, "replay", invoice_id, env=as_coordinator)
        still_there = [item["id"] for item in await listed(operator, topology)]
        forced = await dlq(operator, topology, "replay", invoice_id, "--max-replays", "2", env=as_coordinator)
        async with connection.channel() as channel:  # the replayed invoice, as the consumer gets it
            message = await (await channel.get_queue(topology.payments_queue.name)).get(timeout=5)
            await message.nack(requeue=True)
        handler.fixed = True
        async with payment_consumer(payments, topology, handler, coordinator_user) as paying:
            await eventually(lambda: invoice.invoice_id in paying.invoices, timeout=20)

    assert (letter["id"], letter["reason"], letter["sender"]) == (
        invoice_id,
        "delivery_limit",
        coordinator_user,
    )
    assert (letter["queue"], letter["replays"], letter["suspect"]) == (topology.payments_queue.name, 0, None)
    assert table.returncode == 0, table.stderr
    assert invoice_id in table.stdout and coordinator_user in table.stdout
    assert shown.returncode == 0, shown.stderr
    assert InvoiceIssued.from_json(json.loads(shown.stdout)[0]["body"]) == invoice
    # The coordinator may not read the dead letters: one line saying who lacked what where.
    assert as_the_coordinator.returncode == 2
    refusal = one_line(as_the_coordinator)
    assert f"broker user {coordinator_user} may not read queue {topology.dead_letters_queue.name}" in refusal
    assert "ACCESS_REFUSED" in refusal
    # The operator cannot publish an invoice signed by the coordinator: refused before publishing.
    assert unsigned.returncode == 1
    assert f"sent by broker user {coordinator_user}" in unsigned.stdout
    assert "RECKON_DLQ_REPLAY_URL" in unsigned.stdout and "Traceback" not in unsigned.stderr
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"replayed {invoice_id}" in replayed.stdout
    # It died again: its history came with it, and past the maximum it is refused, naming it.
    assert (again["id"], again["count"], again["replays"]) == (invoice_id, 1, 1)
    assert too_often.returncode == 1
    assert "replayed 1 time(s) already" in too_often.stdout
    assert "max_replays is 1 (RECKON_DLQ_MAX_REPLAYS" in too_often.stdout
    assert still_there == [invoice_id]
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert (message.user_id, message.message_id) == (coordinator_user, invoice_id)
    assert message.headers["x-reckon-replays"] == 2
    assert not any(key.startswith(("x-death", "x-first-death", "x-last-death")) for key in message.headers)
    assert (paying.rejected, list(paying.invoices)) == (0, [invoice.invoice_id])
    assert await list_dead_letters(connection, topology) == ([], 0)


async def dead_letter(connection: AbstractRobustConnection, topology: Topology, *bodies: bytes) -> None:
    """Publish each body to payments.invoices and reject it, as the payment consumer rejects an
    invalid invoice: the broker dead-letters it (``message_id`` = ``letter-<n>``)."""
    async with connection.channel(publisher_confirms=True) as channel:
        exchange = await channel.get_exchange(topology.invoices.name)
        for number, body in enumerate(bodies):
            await exchange.publish(
                aio_pika.Message(body, message_id=f"letter-{number}", content_type=CONTENT_TYPE),
                ROUTING_INVOICE_ISSUED,
            )
        queue = await channel.get_queue(topology.payments_queue.name)
        for _ in bodies:
            await (await queue.get(timeout=5)).reject(requeue=False)


async def test_list_keeps_no_body_and_shows_the_start_of_large_ones(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    await declare_topology(connection, topology)
    bodies = [b'{"padding": "' + bytes([ord("a") + n]) * (8 * MiB) + b'"}' for n in range(3)]
    await dead_letter(connection, topology, *bodies)
    await parked(connection, topology, 3)

    with role(amqp_url, topology, "reckon-operator") as (_, operator):
        as_json = await dlq(operator, topology, "list", "--json")
        table = await dlq(operator, topology, "list")
        shown = await dlq(operator, topology, "show", "letter-1", "--json")

    assert as_json.returncode == 0, as_json.stderr
    letters = json.loads(as_json.stdout)
    assert [letter["id"] for letter in letters] == ["letter-0", "letter-1", "letter-2"]
    assert [letter["body_size"] for letter in letters] == [len(body) for body in bodies]
    for letter, body in zip(letters, bodies, strict=True):
        assert letter["preview"] == body[:PREVIEW_BYTES].decode() + "…"
    assert len(as_json.stdout) < 10_000  # summaries only
    assert table.returncode == 0, table.stderr
    assert '{"padding": "aaaa' in table.stdout and "3 dead letter(s)" in table.stdout
    assert len(table.stdout) < 10_000
    assert shown.returncode == 0, shown.stderr
    [detail] = json.loads(shown.stdout)
    assert (detail["body_truncated"], detail["body_size"]) == (True, len(bodies[1]))
    assert detail["body"] == bodies[1][:SHOW_BYTES].decode()


async def test_purge_deletes_exactly_the_letters_it_listed_and_keeps_one_arriving_meanwhile(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    await declare_topology(connection, topology)
    await dead_letter(connection, topology, b"{}", b"[]", b"0")
    await parked(connection, topology, 3)

    with role(amqp_url, topology, "reckon-operator") as (_, operator):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accounting.cli", "dlq", "purge",
            env=environment(operator, topology), cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stdin is not None
        asked = b""
        while b"[y/N]" not in asked:  # it listed them and is asking
            chunk = await asyncio.wait_for(process.stdout.read(1024), 60)
            assert chunk, f"exited before asking: {asked.decode()}"
            asked += chunk
        async with connection.channel(publisher_confirms=True) as channel:  # one more arrives now
            exchange = await channel.get_exchange(topology.invoices.name)
            await exchange.publish(aio_pika.Message(b"late", message_id="late"), ROUTING_INVOICE_ISSUED)
            payments = await channel.get_queue(topology.payments_queue.name)
            await (await payments.get(timeout=5)).reject(requeue=False)

            async def ready() -> bool:  # the three listed ones are held by the purge: only it is ready
                letters = await channel.get_queue(topology.dead_letters_queue.name)
                message = await letters.get(fail=False)
                if message is None:
                    return False
                await message.nack(requeue=True)
                assert message.message_id == "late"
                return True

            await eventually(ready, timeout=15)
        out, err = await asyncio.wait_for(process.communicate(b"y\n"), 60)
        [named] = await listed(operator, topology)
        by_id = await dlq(operator, topology, "purge", "late", "--yes")

    assert process.returncode == 0, err.decode()
    assert "Delete all 3 dead letters" in asked.decode()
    assert "letter-0, letter-1, letter-2" in asked.decode()
    assert "purged 3 dead letters" in out.decode()
    assert named["id"] == "late"
    assert by_id.returncode == 0, by_id.stderr
    assert "purged 1 dead letters" in by_id.stdout
    assert await list_dead_letters(connection, topology) == ([], 0)


@pytest.mark.parametrize(
    "user", ["reckon-compute", "reckon-storage", "reckon-scheduler", "reckon-payments", "reckon-operator"]
)
async def test_nobody_but_the_broker_can_plant_a_dead_letter(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, user: str
) -> None:
    await declare_topology(connection, topology)
    forged: dict[str, FieldValue] = {
        "x-death": [
            {
                "count": 1,
                "reason": "delivery_limit",
                "queue": topology.payments_queue.name,
                "exchange": topology.invoices.name,
                "routing-keys": [ROUTING_INVOICE_ISSUED],
            }
        ]
    }
    with role(amqp_url, topology, user) as (_, url):
        planter = await aio_pika.connect_robust(url)
        try:
            channel = await planter.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.dead_letter_exchange.name, ensure=False)
            with pytest.raises(ChannelAccessRefused, match=r"access to exchange .*billing\.dlx"):
                await exchange.publish(
                    aio_pika.Message(b"{}", message_id="planted", headers=forged), ROUTING_INVOICE_ISSUED
                )
        finally:
            await planter.close()

    assert await list_dead_letters(connection, topology) == ([], 0)


async def test_a_worker_rejecting_a_request_dead_letters_it_without_any_right_on_the_dead_letter_exchange(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    await declare_topology(connection, topology)
    async with connection.channel(publisher_confirms=True) as channel:
        await declare_queue(channel, topology.usage_queue("compute"))
        usage = await channel.get_exchange(topology.usage.name)
        await usage.publish(aio_pika.Message(b"{}", message_id="from-a-stranger"), "compute")

    with (
        role(amqp_url, topology, "reckon-compute") as (_, compute),
        role(amqp_url, topology, "reckon-operator") as (_, operator),
    ):
        worker = await aio_pika.connect_robust(compute)
        try:
            async with worker.channel() as channel:
                requests = await channel.get_queue(topology.usage_queue("compute").name)
                await (await requests.get(timeout=5)).reject(requeue=False)
        finally:
            await worker.close()
        await parked(connection, topology, 1)
        [letter] = await listed(operator, topology)

    assert (letter["id"], letter["reason"]) == ("from-a-stranger", "rejected")
    assert (letter["queue"], letter["suspect"]) == (topology.usage_queue("compute").name, None)
