"""A worker whose store holds no usage at all (a new volume, a wrong path) says so in its log and
its readiness, and answers a request with an error naming its store, never "no usage"; once its
store is seeded it is ready and answers, without a restart. A real worker process, real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology, declare_usage_queues
from contracts import Period, Topology, UsageReply, UsageRequest
from tests.e2e.test_json_logs import json_lines
from tests.e2e.test_start_waits import ROOT, base_environment, free_port, probed, running, until_probe
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


async def ask(connection: AbstractRobustConnection, topology: Topology) -> UsageReply:
    """One request to the compute queue, signed by the test's user; its last reply."""
    request = UsageRequest(
        request_id=uuid.uuid4().hex,
        report_id=uuid.uuid4(),
        period=PERIOD,
        service="compute",
        deadline=datetime.now(UTC) + timedelta(seconds=60),
    )
    channel = await connection.channel()
    try:
        replies = await channel.declare_queue("", exclusive=True)
        exchange = await channel.get_exchange(topology.usage.name)
        await exchange.publish(
            aio_pika.Message(
                request.to_json(), correlation_id=request.request_id, reply_to=replies.name, user_id="guest"
            ),
            routing_key="compute",
        )
        async with asyncio.timeout(60), replies.iterator() as messages:
            async for message in messages:
                await message.ack()
                reply = UsageReply.from_json(message.body)
                if reply.status == "error" or reply.chunk.last:
                    return reply
    finally:
        await channel.close()
    raise AssertionError("no last reply")


async def test_an_empty_store_is_not_ready_and_answers_an_error_until_it_is_seeded(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    await declare_usage_queues(connection, topology, ["compute"])
    db = tmp_path / "compute.sqlite3"
    port = free_port()
    env = base_environment(amqp_url, topology.namespace, port)
    async with running(tmp_path / "compute.log", env, "-m", "workers.compute", "serve", "--db", str(db)):
        await until_probe(port, "/healthz", 200)

        async def store_is_reported_empty() -> bool:
            status, body = await probed(port, "/readyz")
            return status == 503 and str(body.get("checks", {}).get("store", "")).startswith("empty store")

        await eventually(store_is_reported_empty, timeout=60)

        refused = await ask(connection, topology)
        assert refused.status == "error" and refused.error is not None
        assert "empty store" in refused.error.message and "compute" in refused.error.message

        seeded = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.compute", "seed", "--period", "2026-10", "--db", str(db),
            "--accounts", "3", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await seeded.communicate()
        assert seeded.returncode == 0, output
        await until_probe(port, "/readyz", 200)
        answered = await ask(connection, topology)
        assert answered.status == "ok"

    records = json_lines(tmp_path / "compute.log")
    [warning] = [r for r in records if "starts with an empty store" in str(r.get("event"))]
    assert warning["level"] == "warning"
