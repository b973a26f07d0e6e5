"""The scheduler and the reference payment consumer with the broker permissions deploy/ gives them
(deploy/dev-infra/rabbitmq/definitions.json), on broker users made by ``rabbitmqctl``: each can do
its work with those and no more. (Declaring an exchange needs configure even when it exists.)"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.broker import declare_coordinator_topology
from accounting.payments import PaymentConsumer
from accounting.scheduler import close_period
from contracts import Period, PeriodClosed, Topology
from tests.broker import rabbitmqctl_sync
from tests.integration.support import eventually
from tests.integration.test_payments_durable import publish
from tests.invoices import sample_invoice

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

PASSWORD = "test-only-not-secret"


@contextmanager
def broker_user(amqp_url: str, configure: str, write: str, read: str) -> Iterator[str]:
    """A broker user with these permission regexes on the test vhost; yields its URL."""
    user = f"reckon-test-{uuid.uuid4().hex[:8]}"
    parts = urlsplit(amqp_url)
    vhost = parts.path.lstrip("/") or "/"
    rabbitmqctl_sync("add_user", user, PASSWORD)
    try:
        rabbitmqctl_sync("set_permissions", "-p", vhost, user, configure, write, read)
        host = parts.netloc.rsplit("@", 1)[-1]
        yield urlunsplit((parts.scheme, f"{user}:{PASSWORD}@{host}", parts.path, "", ""))
    finally:
        rabbitmqctl_sync("delete_user", user)


def names(topology: Topology, *resources: str) -> str:
    """``^(<ns>.a|<ns>.b)$``: what definitions.json grants, in the test's namespace."""
    return "^(" + "|".join(re.escape(f"{topology.namespace}.{resource}") for resource in resources) + ")$"


async def test_the_payment_consumer_needs_only_read_on_its_two_queues(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    invoice = sample_invoice("acme")
    read = names(topology, "payments.invoices", "payments.corrections")
    with broker_user(amqp_url, "^$", "^$", read) as url:
        await publish(connection, topology, invoice)  # the coordinator's topology exists first
        restricted = await aio_pika.connect_robust(url)
        try:
            consumer = await PaymentConsumer.start(restricted, topology)
            await eventually(lambda: len(consumer.invoices) == 1, timeout=15)
            await consumer.stop()
        finally:
            await restricted.close()

    assert list(consumer.invoices) == [invoice.invoice_id]


async def test_the_scheduler_needs_only_the_periods_exchange_and_queue(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    periods = ("billing.periods", "accounting.period-closed")
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    with broker_user(
        amqp_url,
        names(topology, *periods),
        names(topology, *periods, "billing.dlx"),
        names(topology, *periods),
    ) as url:
        restricted = await aio_pika.connect_robust(url)
        try:
            await close_period(restricted, topology, Period.month("2026-10"), "cron")
        finally:
            await restricted.close()
    async with connection.channel() as channel:
        queue = await channel.get_queue(topology.period_closed_queue.name)
        async with queue.iterator() as messages:  # single active consumer: no basic.get
            message = await asyncio.wait_for(anext(messages), 10)
            await message.ack()

    assert PeriodClosed.from_json(message.body).period_id == "2026-10"
