"""The conformance kit against real services over the real broker: a correct one (the SDK) passes
every check; services broken on purpose — written with raw aio-pika, so the SDK cannot fix them —
are each caught by the check of the rule they break, and by that check alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from accounting.amqp.topology import declare_coordinator_topology
from conformance import Result, Status, run_conformance
from conformance.pytest_plugin import Conformance, ConformanceFailed
from conformance.settings import ConformanceSettings
from contracts import CONTENT_TYPE, Period, Topology, UsageRecord, UsageRequest
from tests.integration.support import StaticService, serving, serving_as
from tests.integration.test_least_privilege import role

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")
QUICK: dict[str, Any] = {"timeout": 5.0, "quiet": 1.0, "gap_seconds": 1.0, "period": PERIOD}
"""Short waits: every service here answers at once."""

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl (broker users)"
)


def usage_records(count: int = 6) -> list[UsageRecord]:
    return [
        UsageRecord(
            account_id=f"acct-{number // 2}",
            resource_id=f"vm-{number}",
            resource_type="instance",
            metric="vcpu",
            quantity=Decimal(3600 * (number + 1)),
            unit="vCPU-second",
            attributes={"region": "eu-west-1"},
        )
        for number in range(count)
    ]


def settings(amqp_url: str, topology: Topology, **more: Any) -> ConformanceSettings:
    return ConformanceSettings(amqp_url=amqp_url, namespace=topology.namespace, **more)


def verdicts(result: Result) -> dict[str, Status]:
    return {check.id: check.status for check in result.checks}


def failed(result: Result) -> set[str]:
    return {check.id for check in result.failed}


@pytest.fixture
def impostor(amqp_url: str, topology: Topology) -> Iterator[str]:
    """A URL of another broker user, with a worker's permissions (it may write to the default exchange)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs the local broker's rabbitmqctl (broker users)")
    with role(amqp_url, topology, "reckon-storage") as (_, url):
        yield url


@dataclass(frozen=True)
class Broken:
    """How a raw service departs from the contract (none of these: it conforms)."""

    unit: str = "vCPU-second"
    unsigned: bool = False
    """Replies published without ``user_id``."""
    gap: bool = False
    """Chunk seq 1 is never sent."""
    duplicate: bool = False
    """The second record names the first one's (account, resource, metric)."""
    float_quantity: bool = False
    """The first record's quantity is a JSON number."""
    gullible: bool = False
    """Answers every request, whoever sent it."""


def answer_bodies(request: UsageRequest, broken: Broken, chunk_size: int = 2) -> list[bytes]:
    records: list[dict[str, Any]] = [record.model_dump(mode="json") for record in usage_records()]
    for record in records:
        record["unit"] = broken.unit
    if broken.duplicate:
        records[2].update(account_id=records[0]["account_id"], resource_id=records[0]["resource_id"])
    if broken.float_quantity:
        records[0]["quantity"] = 3600.5
    answer_id = uuid.uuid4().hex
    chunks = [records[start : start + chunk_size] for start in range(0, len(records), chunk_size)]
    bodies = []
    for seq, chunk in enumerate(chunks):
        if broken.gap and seq == 1:
            continue
        last = seq == len(chunks) - 1
        reply = {
            "schema_version": "1.2",
            "request_id": request.request_id,
            "service": request.service,
            "status": "ok",
            "records": chunk,
            "chunk": {
                "seq": seq,
                "last": last,
                "total_records": len(records) if last else chunk_size * (seq + 1),
                "answer_id": answer_id,
            },
        }
        bodies.append(json.dumps(reply).encode())
    return bodies


@asynccontextmanager
async def raw_service(
    connection: AbstractConnection, topology: Topology, name: str, broken: Broken, coordinator: str = "guest"
) -> AsyncIterator[None]:
    """A sub-service written without the SDK, conforming but for what ``broken`` says: it answers
    only ``coordinator``'s requests, refuses an invalid one with an error reply and dead-letters it,
    and answers each delivery with a new answer id."""
    channel = await connection.channel()
    spec = topology.usage_queue(name)
    exchange = await channel.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    await queue.bind(exchange, spec.routing_key)
    signed = None if broken.unsigned else "guest"

    async def send(body: bytes, correlation_id: str, reply_to: str) -> None:
        message = aio_pika.Message(
            body, content_type=CONTENT_TYPE, correlation_id=correlation_id, user_id=signed
        )
        await channel.default_exchange.publish(message, routing_key=reply_to)

    async def on_request(message: AbstractIncomingMessage) -> None:
        if message.user_id != coordinator and not broken.gullible:
            await message.reject(requeue=False)
            return
        try:
            request = UsageRequest.from_json(message.body)
        except ValidationError as error:
            refusal = {
                "schema_version": "1.2",
                "request_id": message.correlation_id,
                "service": name,
                "status": "error",
                "error": {"code": "invalid_request", "message": str(error)[:500]},
            }
            await send(json.dumps(refusal).encode(), message.correlation_id or "", message.reply_to or "")
            await message.reject(requeue=False)
            return
        for body in answer_bodies(request, broken):
            await send(body, request.request_id, message.reply_to or "")
        await message.ack()

    tag = await queue.consume(on_request)
    try:
        yield
    finally:
        await queue.cancel(tag)
        await channel.close()


async def test_a_service_built_with_the_sdk_passes_every_check(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, impostor: str
) -> None:
    echo = StaticService("echo", usage_records(7))
    async with serving(connection, topology, echo, chunk_size=3):
        result = await run_conformance(
            "echo", settings=settings(amqp_url, topology), impostor_url=impostor, **QUICK
        )

    assert result.passed, result.explain()
    assert set(verdicts(result).values()) == {Status.PASS}, result.explain()
    assert "7 record(s) in 3 chunk(s)" in result.check("answered").reason
    assert "dead-lettered" in result.check("invalid_json").reason
    assert len(echo.calls) == 3  # the first request, the second, and the second delivered again


@pytest.mark.parametrize(
    ("broken", "caught_by", "because"),
    [
        (Broken(unit="bytes"), "schema", "unit 'bytes' is not in the unit vocabulary"),
        (Broken(unsigned=True), "user_id", "carry no user_id"),
        (Broken(gap=True), "chunks", "missing seq 1 before the last chunk 2"),
        (Broken(duplicate=True), "unique", "(acct-0, vm-0, vcpu) 2 times"),
        (Broken(float_quantity=True), "schema", "3600.5 is a JSON number (a float)"),
    ],
    ids=["wrong-unit", "missing-user-id", "gap-in-chunks", "duplicated-resource", "float-quantity"],
)
async def test_a_service_breaking_one_rule_is_caught_by_that_check(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    broken: Broken,
    caught_by: str,
    because: str,
) -> None:
    async with raw_service(connection, topology, "broken", broken):
        result = await run_conformance("broken", settings=settings(amqp_url, topology), **QUICK)

    assert not result.passed
    assert failed(result) == {caught_by}, result.explain()
    assert because in result.check(caught_by).reason, result.explain()


async def test_the_same_raw_service_unbroken_passes(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    """The broken services above differ from a conforming one only in what they break."""
    async with raw_service(connection, topology, "broken", Broken()):
        result = await run_conformance("broken", settings=settings(amqp_url, topology), **QUICK)

    assert result.passed, result.explain()
    assert result.check("impostor").status is Status.NOT_CHECKED  # optional, not asked for


async def test_a_service_answering_anyone_is_caught_by_the_unsigned_and_the_impostors_request(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, impostor: str
) -> None:
    async with raw_service(connection, topology, "broken", Broken(gullible=True)):
        result = await run_conformance(
            "broken", settings=settings(amqp_url, topology), impostor_url=impostor, **QUICK
        )

    assert failed(result) == {"no_user_id", "impostor"}, result.explain()
    assert "reply_to anyone chose" in result.check("impostor").reason


async def test_a_service_that_is_not_running_fails_the_first_check_and_judges_nothing_else(
    amqp_url: str, topology: Topology
) -> None:
    result = await run_conformance(
        "ghost", settings=settings(amqp_url, topology), timeout=1, quiet=0.5, period=PERIOD
    )

    assert failed(result) == {"answered"}
    assert "no consumer on queue" in result.check("answered").reason
    assert {check.status for check in result.checks[1:]} == {Status.NOT_CHECKED}


@needs_rabbitmqctl
async def test_the_kit_runs_as_the_deployed_coordinator_user_against_a_deployed_worker(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    """As deploy/ grants them: the kit as the coordinator's user declares the worker's queue (a policy
    names its dead-letter exchange), counts dead letters in billing.dead-letters (it may not bind a
    queue of its own to billing.dlx), and expects the worker's user on the replies (service_users)."""
    compute = StaticService("compute", usage_records(3))
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
    ):
        worker = await aio_pika.connect_robust(compute_url)
        try:

            async def deployed_worker() -> None:
                # It waits for the coordinator (here the kit) to declare its queue.
                async with serving_as(worker, topology, compute, coordinator_user=coordinator_user):
                    await asyncio.Event().wait()

            serving_task = asyncio.create_task(deployed_worker())
            try:
                result = await run_conformance(
                    "compute",
                    settings=settings(
                        coordinator_url,
                        topology,
                        coordinator_user=coordinator_user,
                        service_users={"compute": compute_user},
                        dead_letters="policy",
                    ),
                    **QUICK,
                )
            finally:
                serving_task.cancel()
                await asyncio.gather(serving_task, return_exceptions=True)
        finally:
            await worker.close()

    assert result.passed, result.explain()
    assert f"user_id {compute_user!r}" in result.check("user_id").reason
    assert "dead-lettered" in result.check("invalid_schema").reason  # billing.dead-letters grew


async def test_replies_from_another_user_than_the_configured_service_user_fail(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    echo = StaticService("echo", usage_records(2))
    async with serving(connection, topology, echo):
        result = await run_conformance(
            "echo",
            settings=settings(amqp_url, topology, service_users={"echo": "reckon-echo"}),
            **QUICK,
        )

    assert failed(result) == {"user_id"}, result.explain()
    assert "expected 'reckon-echo' (service_users names it for echo)" in result.check("user_id").reason


async def test_the_pytest_fixture_fails_with_the_table_and_returns_the_result(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    conformance = Conformance()
    async with raw_service(connection, topology, "broken", Broken(unit="bytes")):
        with pytest.raises(ConformanceFailed) as failure:
            await conformance("broken", amqp_url=amqp_url, namespace=topology.namespace, **QUICK)
        result = await conformance(
            "broken", expect_pass=False, amqp_url=amqp_url, namespace=topology.namespace, **QUICK
        )

    assert "does NOT conform" in str(failure.value)
    assert "fail        schema" in str(failure.value)
    assert failed(result) == {"schema"}
