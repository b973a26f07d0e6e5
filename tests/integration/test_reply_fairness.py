"""Reports do not wait for each other's replies: a service that floods one report (here 20,000
empty chunks, as fast as the broker takes them, from a process of its own) queues them behind
that report's own replies only, so a concurrent report's one reply is taken at once.

The coordinator's event loop is held while the flood is published, as when the coordinator falls
behind: the flood then waits in the broker, and the concurrent report must not wait behind it.
Its time is never asserted; what it must not wait for is: it completes while thousands of the
flood's chunks are still queued."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.report import Completed
from contracts import Period, Topology
from tests.integration.support import coordinator, eventually

pytestmark = pytest.mark.integration

FLOOD = 20_000
FLOODED, OTHER = Period.month("2026-05"), Period.month("2026-06")


async def queued(connection: AbstractRobustConnection, queue: str) -> int:
    """How many messages wait in ``queue``: asked on the coordinator's own connection, as a reply
    queue is exclusive to it."""
    async with connection.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True, robust=False)
        return declared.declaration_result.message_count or 0


async def test_a_concurrent_report_completes_while_another_reports_flood_is_still_queued(
    amqp_url: str, topology: Topology
) -> None:
    command = [sys.executable, "-m", "bench.flood_service"]
    arguments = [amqp_url, topology.namespace, "chunky", FLOODED.period_id, str(FLOOD)]
    # Blocking on purpose: reading its "flooded" line holds the coordinator back (see above).
    flooder = subprocess.Popen([*command, *arguments], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert flooder.stdout is not None and flooder.stdout.readline().strip() == "ready"
        async with coordinator(amqp_url, topology, ["chunky"], deadline_seconds=120) as running:
            gatherer, connection = running.app.gatherer, running.app.connection
            flooded = asyncio.create_task(running.run_period(FLOODED))
            try:
                await eventually(lambda: len(gatherer.reply_queues()) == 1)
                [flooded_queue] = gatherer.reply_queues()
                assert flooder.stdout.readline().strip() == "flooded"  # blocks the event loop on purpose
                assert await queued(connection, flooded_queue) > FLOOD // 2

                other = await running.run_period(OTHER)

                assert isinstance(other.outcome, Completed)
                assert await queued(connection, flooded_queue) > FLOOD // 4
                assert not flooded.done()
            finally:
                flooded.cancel()
                await asyncio.gather(flooded, return_exceptions=True)
    finally:
        flooder.kill()
        flooder.wait()
