"""A flood of stray replies (unknown correlation ids) is counted exactly and logged a few lines at
most: an error-rate alert or a disk must not be flooded by one misbehaving or hostile sender."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts import CONTENT_TYPE, Period, Topology
from tests.integration.support import StaticService, coordinator, eventually, serving

pytestmark = pytest.mark.integration

STRAY = 2_000


async def test_stray_replies_are_counted_each_and_logged_a_few_lines_at_most(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reckon.gather")
    slow = StaticService("compute", delay=2.0)  # keeps the gather, and its reply queue, open
    async with (
        serving(connection, topology, slow),
        coordinator(amqp_url, topology, ["compute"], consume=False, deadline_seconds=60) as running,
    ):
        gatherer = running.app.gatherer
        building = asyncio.create_task(running.run_period(Period.month("2026-10")))
        await eventually(lambda: bool(gatherer.reply_queues()))
        [reply_queue] = gatherer.reply_queues()
        async with connection.channel() as channel:
            for _ in range(STRAY):
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{}", content_type=CONTENT_TYPE, correlation_id=uuid.uuid4().hex),
                    routing_key=reply_queue,
                )
        await eventually(lambda: gatherer.unknown_replies == STRAY, timeout=60)
        assert (await building).gather.finished

    lines = [record for record in caplog.records if "unknown correlation id" in record.getMessage()]
    assert 1 <= len(lines) <= 3, [record.getMessage() for record in lines]
