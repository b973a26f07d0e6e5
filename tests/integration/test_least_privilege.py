"""Every role with exactly the broker permissions deploy/ gives it
(deploy/dev-infra/rabbitmq/definitions.json), as users made by ``rabbitmqctl``: the scheduler, the
payment consumer, a worker and the coordinator each do their work with those and no more.
(Declaring an exchange needs configure even when it already exists.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.amqp.topology import declare_coordinator_topology, declare_usage_queues
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted, Completed
from contracts import AbortCode, Period, PeriodClosed, Topology, report_id
from payments.consumer import PaymentConsumer
from tests.broker import rabbitmqctl_sync
from tests.deploy.tools import definitions
from tests.faults import LEDGER
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
def policies(amqp_url: str, topology: Topology) -> Iterator[None]:
    """definitions.json's broker policies, for the test's namespace (the deployed coordinator,
    ``dead_letters = "policy"``, relies on them for its queues' dead-letter exchange)."""
    vhost = urlsplit(amqp_url).path.lstrip("/") or "/"
    names = []
    try:
        for policy in definitions()["policies"]:
            name = f"{policy['name']}-{topology.namespace}"
            definition = {
                key: f"{topology.namespace}.{value}" if key == "dead-letter-exchange" else value
                for key, value in policy["definition"].items()
            }
            rabbitmqctl_sync(
                "set_policy", "-p", vhost, "--apply-to", policy["apply-to"],
                "--priority", str(policy["priority"]),
                name, namespaced(policy["pattern"], topology.namespace), json.dumps(definition),
            )  # fmt: skip
            names.append(name)
        yield
    finally:
        for name in names:
            rabbitmqctl_sync("clear_policy", "-p", vhost, name)


@contextmanager
def role(amqp_url: str, topology: Topology, user: str) -> Iterator[tuple[str, str]]:
    """A broker user with ``user``'s permissions from definitions.json; yields its name and URL.
    The coordinator's comes with the broker's policies (its queues' dead-letter exchange)."""
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
        with policies(amqp_url, topology) if user == "reckon-coordinator" else nullcontext():
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
            # As deployed: the coordinator declares the service's queue, the worker only consumes it.
            async with (
                coordinator(
                    coordinator_url,
                    topology,
                    ["compute"],
                    consume=False,
                    service_users={"compute": compute_user},
                    dead_letters="policy",
                ) as running,
                serving_as(worker, topology, compute, coordinator_user=coordinator_user),
            ):
                run = await running.run_period(Period.month("2026-10"))
                await running.wait_until(run, ReportStatus.COMPLETED)  # the relay published it all
        finally:
            await worker.close()

    assert isinstance(run.outcome, Completed), run.outcome
    assert run.outcome.report.invoice_count == 1


ROOT = Path(__file__).resolve().parents[2]


async def reckon(url: str, topology: Topology, *arguments: str, **settings: str) -> tuple[int, str]:
    """``reckon ARGUMENTS`` as the deployment runs it: a process of its own, as the broker user of
    ``url``; its exit code and its output."""
    env = {
        **os.environ,
        "AMQP_URL": url,
        "RECKON_NAMESPACE": topology.namespace,
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }
    env.pop("RECKON_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", *arguments,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def dead_letter_count(connection: AbstractRobustConnection, topology: Topology) -> int:
    async with connection.channel() as channel:
        queue = await channel.declare_queue(topology.dead_letters_queue.name, passive=True)
        return queue.declaration_result.message_count or 0


async def test_the_deployed_close_period_command_runs_as_the_scheduler_with_and_without_wait(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "36000", "vCPU-second")])
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
        role(amqp_url, topology, "reckon-scheduler") as (scheduler_user, scheduler_url),
    ):
        worker = await aio_pika.connect_robust(compute_url)
        try:
            async with (
                coordinator(
                    coordinator_url,
                    topology,
                    ["compute"],
                    service_users={"compute": compute_user},
                    dead_letters="policy",
                    scheduler_user=scheduler_user,
                ) as running,
                serving_as(worker, topology, compute, coordinator_user=coordinator_user),
            ):
                code, output = await reckon(
                    scheduler_url, topology, "close-period", "2026-09", "--requested-by", "cronjob"
                )
                assert code == 0, output
                assert "PeriodClosed 2026-09 published" in output
                first = await running.next_run()

                code, output = await reckon(scheduler_url, topology, "close-period", "2026-10", "--wait")
                assert code == 0, output
                assert "completed" in output, output
        finally:
            await worker.close()

    assert first.key.period.period_id == "2026-09"
    assert first.history.transitions[0].reason == f"PeriodClosed from {scheduler_user} (cronjob)"


async def test_only_the_schedulers_broker_user_may_close_a_period(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "36000", "vCPU-second")])
    forged = PeriodClosed.for_period(Period.month("2025-09"), "scheduler")
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
        role(amqp_url, topology, "reckon-scheduler") as (scheduler_user, scheduler_url),
    ):
        worker = await aio_pika.connect_robust(compute_url)
        try:
            async with (
                coordinator(
                    coordinator_url,
                    topology,
                    ["compute"],
                    service_users={"compute": compute_user},
                    dead_letters="policy",
                    scheduler_user=scheduler_user,
                ) as running,
                serving_as(worker, topology, compute, coordinator_user=coordinator_user),
            ):
                # The worker's user may write to the default exchange: it posts straight to the queue.
                async with worker.channel() as channel:
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            forged.to_json(), content_type="application/json", user_id=compute_user
                        ),
                        routing_key=topology.period_closed_queue.name,
                    )

                async def parked() -> bool:
                    return await dead_letter_count(connection, topology) == 1

                await eventually(parked, timeout=15)
                consumer = running.app.consumer
                assert consumer is not None and consumer.refused == 1
                assert await running.app.store.get(report_id("2025-09", 1)) is None  # no report made
                LEDGER.attack("a worker closes a period", refused=consumer.refused, accepted=0)

                # The scheduler's real close of that month is not blocked by the forged one.
                code, output = await reckon(scheduler_url, topology, "close-period", "2025-09", "--wait")
                assert code == 0, output
        finally:
            await worker.close()

    assert await dead_letter_count(connection, topology) == 1


async def test_no_client_user_writes_to_the_dead_letter_exchange_and_queues_of_an_earlier_release_are_kept(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    """As deployed the broker's policy names the dead-letter exchange, so the coordinator needs no
    write on it; the queues a release declared with ``x-dead-letter-exchange`` are kept as they are
    (the broker refuses to change a queue in place, and these hold invoices)."""
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)  # as the earlier release did
    await declare_usage_queues(connection, topology, ["compute"])
    with role(amqp_url, topology, "reckon-coordinator") as (_, coordinator_url):
        async with coordinator(coordinator_url, topology, ["compute"], dead_letters="policy") as running:
            assert running.app.consumer is not None  # started on the queues it found
            async with running.app.connection.channel(publisher_confirms=True) as channel:
                dlx = await channel.get_exchange(topology.dead_letter_exchange.name, ensure=False)
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match=r"billing\.dlx"):
                    await dlx.publish(aio_pika.Message(b"{}", message_id="planted"), "anything", timeout=10)
    assert await dead_letter_count(connection, topology) == 0
    LEDGER.attack("the coordinator's user plants a dead letter", refused=1, accepted=0)


async def test_a_worker_can_neither_touch_the_shared_topology_nor_take_another_services_requests(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    await declare_usage_queues(connection, topology, ["compute", "storage"])
    with role(amqp_url, topology, "reckon-compute") as (_, compute_url):
        worker = await aio_pika.connect_robust(compute_url)
        try:

            async def bind_to_storages_key(channel: AbstractChannel) -> object:
                underlay = await channel.get_underlay_channel()
                return await underlay.queue_bind(
                    topology.usage_queue("compute").name, topology.usage.name, routing_key="storage"
                )

            attempts: list[Callable[[AbstractChannel], Awaitable[object]]] = [
                lambda channel: channel.exchange_delete(topology.usage.name),
                lambda channel: channel.declare_exchange(topology.usage.name, "fanout", durable=True),
                lambda channel: channel.queue_delete(topology.usage_queue("storage").name),
                bind_to_storages_key,
                lambda channel: channel.declare_queue("stolen-requests", durable=True),
            ]
            for attempt in attempts:
                channel = await worker.channel()
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await attempt(channel)
            LEDGER.attack("a worker rearranges the topology", refused=len(attempts))
            channel = await worker.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                # Nobody but the broker (and the coordinator, which declares queues that dead-letter
                # into it) may write to the dead-letter exchange: no forged x-death.
                dlx = await channel.get_exchange(topology.dead_letter_exchange.name)
                await dlx.publish(aio_pika.Message(b"{}"), routing_key="x", timeout=5)
        finally:
            await worker.close()
    async with connection.channel() as channel:
        usage = await channel.get_exchange(topology.usage.name)  # still there, still direct
        assert usage.name == topology.usage.name


async def test_a_configured_service_that_is_not_running_aborts_its_report_at_once(
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
                # storage is configured, and so its queue declared, but no storage worker runs.
                coordinator(
                    coordinator_url,
                    topology,
                    ["compute", "storage"],
                    consume=False,
                    deadline_seconds=60,
                    service_users={"compute": compute_user, "storage": "reckon-storage"},
                    dead_letters="policy",
                ) as running,
                serving_as(worker, topology, compute, coordinator_user=coordinator_user),
            ):
                run = await asyncio.wait_for(running.run_period(Period.month("2026-10")), 20)
        finally:
            await worker.close()

    assert isinstance(run.outcome, Aborted), run.outcome
    [reason] = [reason for reason in run.outcome.report.reasons if reason.service == "storage"]
    assert reason.code == AbortCode.UNROUTABLE
    assert "no consumer" in reason.message
