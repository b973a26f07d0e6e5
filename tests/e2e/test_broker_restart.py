"""A broker restart under a running coordinator and sub-service (aio-pika's robust connection is
tested here, not trusted): the next period still completes and its invoices are delivered."""

from __future__ import annotations

import asyncio
import shutil

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from contracts import Period, Topology
from payments.consumer import PaymentConsumer
from tests.broker import rabbitmqctl
from tests.integration.support import StaticService, coordinator, eventually, record, serving

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl")
async def test_after_a_broker_restart_the_next_period_completes_and_is_delivered(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        payments = await PaymentConsumer.start(connection, topology)
        try:
            await rabbitmqctl("stop_app")
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")

        async def consumer_restored() -> bool:
            try:
                channel = await connection.channel()
                queue = await channel.declare_queue(topology.usage_queue("compute").name, passive=True)
                await channel.close()
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
                return False  # still reconnecting (aio-pika: "Connection was not opened")
            return (queue.declaration_result.consumer_count or 0) >= 1

        await asyncio.wait_for(running.app.connection.connected.wait(), 60)
        await eventually(consumer_restored, timeout=60)
        run = await asyncio.wait_for(running.run_period(Period.month("2026-10")), 60)
        assert isinstance(run.outcome, Completed)
        await running.wait_until(run, ReportStatus.COMPLETED, timeout=60)
        await eventually(lambda: len(payments.invoices) == 1, timeout=60)
        await payments.stop()
