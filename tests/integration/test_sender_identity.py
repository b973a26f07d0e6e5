"""Broker-verified sender identity, with real broker users made by ``rabbitmqctl`` for this test run.

Each party connects as its own user and signs what it publishes (AMQP ``user_id``, which the
broker checks against the connection): the coordinator takes a service's reply only from that
service's user, and a service answers only the coordinator's requests.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.gather import Ignored
from accounting.core.report import Completed
from contracts import Period, Topology, UsageReply, UsageRequest
from tests.broker import rabbitmqctl_sync
from tests.faults import LEDGER
from tests.integration.support import StaticService, coordinator, eventually, record, serving_as

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

PERIOD = Period.month("2026-10")
PASSWORD = "test-only-not-secret"
ROLES = ("coordinator", "compute", "storage")


@pytest.fixture(scope="module")
def users(amqp_url: str) -> Iterator[dict[str, str]]:
    """A broker user per role (full rights on the vhost: permissions are not what is tested here)."""
    suffix = uuid.uuid4().hex[:6]
    made = {role: f"reckon-test-{role}-{suffix}" for role in ROLES}
    vhost = urlsplit(amqp_url).path.lstrip("/") or "/"
    for name in made.values():
        rabbitmqctl_sync("add_user", name, PASSWORD)
        rabbitmqctl_sync("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
    try:
        yield made
    finally:
        for name in made.values():
            rabbitmqctl_sync("delete_user", name)


def url_as(amqp_url: str, user: str) -> str:
    parts = urlsplit(amqp_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}:{PASSWORD}@{host}", parts.path, "", ""))


Connections = dict[str, AbstractRobustConnection]


@pytest.fixture
async def connections(amqp_url: str, users: dict[str, str]) -> AsyncIterator[Connections]:
    opened: Connections = {}
    for role, user in users.items():
        opened[role] = await aio_pika.connect_robust(url_as(amqp_url, user))
    yield opened
    for connection in opened.values():
        await connection.close()


async def test_a_reply_forged_by_another_services_user_changes_nothing(
    amqp_url: str,
    topology: Topology,
    users: dict[str, str],
    connections: Connections,
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")], delay=1)
    service_users = {"compute": users["compute"]}
    async with (
        serving_as(connections["compute"], topology, compute, coordinator_user=users["coordinator"]),
        coordinator(
            url_as(amqp_url, users["coordinator"]), topology, ["compute"], service_users=service_users
        ) as running,
    ):
        building = asyncio.create_task(running.run_period(PERIOD))
        await eventually(lambda: len(compute.calls) == 1)

        async def asked() -> str | None:
            latest = await running.app.store.latest(PERIOD.period_id)
            replies = {} if latest is None else await running.app.store.replies(latest.report_id)
            return replies["compute"].request_id if "compute" in replies else None

        async def was_asked() -> bool:
            return await asked() is not None

        await eventually(was_asked)
        request_id = await asked()
        [reply_queue] = running.app.gatherer.reply_queues()  # suppose the forger learnt where replies go
        assert request_id is not None
        forged = UsageReply(
            request_id=request_id,
            service="compute",
            status="ok",
            records=(record("acct-1", "vm-1", "vcpu", str(3600 * 10**6), "vCPU-second"),),
        )
        async with connections["storage"].channel() as channel:
            for body in (forged.to_json(), forged.model_copy(update={"status": "error"}).to_json()):
                await channel.default_exchange.publish(
                    aio_pika.Message(body, correlation_id=request_id, user_id=users["storage"]),
                    routing_key=reply_queue,
                )
        run = await building
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed)
    assert run.gather.ignored[Ignored.REJECTED_SENDER] >= 1
    assert [str(invoice.total) for invoice in invoices] == ["0.03"]  # the real hour, not a million
    LEDGER.attack("a reply forged by another service", refused=run.gather.ignored[Ignored.REJECTED_SENDER])


async def test_the_broker_refuses_a_user_id_that_is_not_the_connections_user(
    topology: Topology, users: dict[str, str], connections: Connections
) -> None:
    channel = await connections["storage"].channel(publisher_confirms=True)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="user_id"):
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", user_id=users["compute"]), routing_key="anywhere", timeout=10
        )
    LEDGER.attack("a user_id of another user", refused=1)


async def test_a_service_answers_only_the_coordinators_requests(
    topology: Topology, users: dict[str, str], connections: Connections
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    async with (
        serving_as(connections["compute"], topology, compute, coordinator_user=users["coordinator"]),
        connections["storage"].channel() as channel,
    ):
        inbox = await channel.declare_queue("", exclusive=True)
        usage = await channel.get_exchange(topology.usage.name)
        for user in (users["storage"], None):  # another service's user, and no user at all
            request = UsageRequest(
                request_id=uuid.uuid4().hex,
                report_id=uuid.uuid4(),
                period=PERIOD,
                service="compute",
                deadline=datetime.now(UTC) + timedelta(seconds=30),
            )
            await usage.publish(
                aio_pika.Message(
                    request.to_json(),
                    correlation_id=request.request_id,
                    reply_to=inbox.name,
                    user_id=user,
                ),
                routing_key="compute",
            )
        await asyncio.sleep(2)
        answered = await inbox.get(fail=False, no_ack=True)

    assert answered is None
    assert compute.calls == []
    LEDGER.attack("usage requests from a stranger", refused=2)
