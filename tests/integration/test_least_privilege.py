"""Every role with exactly the broker permissions deploy/ gives it
(deploy/dev-infra/rabbitmq/definitions.json), as users made by ``rabbitmqctl``: the scheduler, the
payment consumer, a worker and the coordinator each do their work with those and no more.
(Declaring an exchange needs configure even when it already exists.)"""

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

from accounting.amqp.scheduler import close_period
from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from contracts import Period, PeriodClosed, Topology
from payments.consumer import PaymentConsumer
from tests.broker import rabbitmqctl_sync
from tests.deploy.tools import definitions
from tests.integration.support import StaticService, coordinator, eventually, record, serving_as
from tests.invoices import sample_invoice
from tests.payments.test_durable import publish

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

PASSWORD = "test-only-not-secret"
UNPREFIXED = ("amq\\.gen-.*", "amq_[0-9a-f]{32}", "amq\\.default")
"""Names no namespace prefixes: queues the broker or aio-pika name, and the default exchange."""


def namespaced(pattern: str, namespace: str) -> str:
    """A definitions.json permission regex (written for RECKON_NAMESPACE="") for the test's namespace."""
    if pattern in ("", "^$"):
        return "^$"
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    body = pattern[1:-1]
    kept = [name for name in UNPREFIXED if name in body]
    for name in kept:
        body = body.replace(f"|{name}", "")
    alternatives = [f"{re.escape(namespace)}\\.(?:{body})", *kept]
    return "^(" + "|".join(alternatives) + ")$"


@contextmanager
def role(amqp_url: str, topology: Topology, user: str) -> Iterator[tuple[str, str]]:
    """A broker user with ``user``'s permissions from definitions.json; yields its name and URL."""
    [granted] = [p for p in definitions()["permissions"] if p["user"] == user]
    name = f"{user}-test-{uuid.uuid4().hex[:6]}"
    parts = urlsplit(amqp_url)
    vhost = parts.path.lstrip("/") or "/"
    rabbitmqctl_sync("add_user", name, PASSWORD)
    try:
        permissions = [
            namespaced(granted[kind], topology.namespace) for kind in ("configure", "write", "read")
        ]
        rabbitmqctl_sync("set_permissions", "-p", vhost, name, *permissions)
        host = parts.netloc.rsplit("@", 1)[-1]
        yield name, urlunsplit((parts.scheme, f"{name}:{PASSWORD}@{host}", parts.path, "", ""))
    finally:
        rabbitmqctl_sync("delete_user", name)


async def test_the_payment_consumer_needs_only_read_on_its_two_queues(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    invoice = sample_invoice("acme")
    with role(amqp_url, topology, "reckon-payments") as (_, url):
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
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    with role(amqp_url, topology, "reckon-scheduler") as (_, url):
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


async def test_a_period_closes_with_the_coordinator_and_a_worker_as_their_own_users(
    amqp_url: str, topology: Topology
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "36000", "vCPU-second")])
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
    ):
        worker = await aio_pika.connect_robust(compute_url)
        try:
            async with (
                serving_as(worker, topology, compute, coordinator_user=coordinator_user),
                coordinator(
                    coordinator_url,
                    topology,
                    ["compute"],
                    consume=False,
                    service_users={"compute": compute_user},
                ) as running,
            ):
                run = await running.run_period(Period.month("2026-10"))
                await running.wait_until(run, ReportStatus.COMPLETED)  # the relay published it all
        finally:
            await worker.close()

    assert isinstance(run.outcome, Completed), run.outcome
    assert run.outcome.report.invoice_count == 1
