"""One report per period, however often and to however many coordinators PeriodClosed is sent."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.lifecycle import ReportStatus
from accounting.store.repository import ReportStore
from contracts import Period, Topology
from tests.integration.support import StaticService, coordinator, eventually, listening, record, serving

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


async def test_ten_duplicate_events_on_two_replicas_make_exactly_one_report(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, both_stores: str
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "7200", "vCPU-second")])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], store_url=both_stores) as first,
        coordinator(amqp_url, topology, ["compute"], store_url=both_stores) as second,
        listening(connection, topology.reports.name) as reports,
    ):
        await asyncio.gather(
            *(close_period(connection, topology, PERIOD, requested_by=f"scheduler {n}") for n in range(10))
        )
        replicas = [first.app.consumer, second.app.consumer]
        await eventually(lambda: sum(consumer.handled for consumer in replicas if consumer) == 10, timeout=30)
        await eventually(lambda: len(first.runs + second.runs) == 1, timeout=30)
        [run] = first.runs + second.runs
        builder = first if first.runs else second
        await builder.wait_until(run, ReportStatus.COMPLETED)
        await reports.wait_for(1)

    store = await ReportStore.open(both_stores)
    try:
        [report] = await store.list_reports()
    finally:
        await store.close()
    assert (report.period.period_id, report.revision, report.status) == ("2026-10", 1, ReportStatus.COMPLETED)
    assert len(compute.calls) == 1
    assert len(reports.messages) == 1
    # Single active consumer: one replica took every event, the other stood by.
    assert sorted(consumer.handled for consumer in replicas if consumer) == [0, 10]
