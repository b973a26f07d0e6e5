"""A report aborts, with every reason stored and published, and no invoice goes out."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.gather import Ignored
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted, Completed
from contracts import AbortCode, Period, Topology
from tests.integration.support import (
    StaticService,
    coordinator,
    eventually,
    listening,
    record,
    serving,
)

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


def compute_service() -> StaticService:
    return StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])


async def payments_backlog(connection: AbstractRobustConnection, topology: Topology) -> int:
    channel = await connection.channel()
    queue = await channel.declare_queue(topology.payments_queue.name, passive=True)
    count = queue.declaration_result.message_count or 0
    await channel.close()
    return count


async def test_configured_service_without_a_queue_aborts_naming_it(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with (
        serving(connection, topology, compute_service()),
        coordinator(amqp_url, topology, ["compute", "ghost"], deadline_seconds=30) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        await close_period(running.app.connection, topology, PERIOD, "test")
        run = await running.next_run()
        published = await reports.wait_for(1)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("ghost", AbortCode.UNROUTABLE)
    assert "ghost" in reason.message
    assert run.history.status is ReportStatus.ABORTED
    assert published[0]["reasons"][0]["service"] == "ghost"
    assert published[0]["report_id"] == str(run.key.report_id)
    assert await payments_backlog(connection, topology) == 0


async def test_worker_replying_error_aborts(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    broken = StaticService("broken", error=RuntimeError("usage database is unreachable"))
    async with (
        serving(connection, topology, compute_service(), broken),
        coordinator(amqp_url, topology, ["compute", "broken"]) as running,
    ):
        run = await running.run_period(PERIOD)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("broken", AbortCode.SERVICE_ERROR)
    assert "usage database is unreachable" in reason.message
    assert await payments_backlog(connection, topology) == 0


async def test_slow_worker_aborts_at_the_deadline_and_its_late_reply_is_ignored(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    slow = StaticService("slow", records=compute_service().records, delay=3.0)
    async with (
        serving(connection, topology, compute_service(), slow),
        coordinator(amqp_url, topology, ["compute", "slow"], deadline_seconds=1.0) as running,
    ):
        run = await running.run_period(PERIOD)
        assert isinstance(run.outcome, Aborted)
        [reason] = run.outcome.report.reasons
        assert (reason.service, reason.code) == ("slow", AbortCode.DEADLINE)
        # The SDK answers even when it runs out of time; that answer arrives late and changes nothing.
        await eventually(lambda: run.gather.ignored[Ignored.LATE] >= 1, timeout=15)
        assert isinstance(run.outcome, Aborted)
    assert await payments_backlog(connection, topology) == 0


async def test_invalid_reply_aborts_naming_the_field(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    negative = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "1", "vCPU-second")])
    object.__setattr__(negative.records[0], "quantity", -5)  # bypass validation: a buggy service
    async with (
        serving(connection, topology, negative),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        run = await running.run_period(PERIOD)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("compute", AbortCode.INVALID_REPLY)
    assert "records.0.quantity" in reason.message


async def test_unknown_unit_aborts_after_gathering(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    odd = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "1", "vCPU-fortnight")])
    async with (
        serving(connection, topology, odd),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        run = await running.run_period(PERIOD)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("compute", AbortCode.UNKNOWN_UNIT)
    assert "vCPU-fortnight" in reason.message
    assert [t.status for t in run.history.transitions][-2:] == [
        ReportStatus.NORMALIZING,
        ReportStatus.ABORTED,
    ]


async def test_connection_lost_mid_gather_aborts_promptly(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    slow = StaticService("slow", delay=30.0)
    async with (
        serving(connection, topology, slow),
        coordinator(amqp_url, topology, ["slow"], deadline_seconds=60) as running,
    ):
        import asyncio

        task = asyncio.create_task(running.run_period(PERIOD))
        await eventually(lambda: bool(slow.calls))
        await running.app.gatherer.close()  # the reply channel goes away mid-gather
        run = await asyncio.wait_for(task, timeout=10)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert reason.code is AbortCode.TRANSPORT_LOST
    assert reason.service is None


async def test_an_abort_is_announced_at_once_and_the_other_answers_are_still_stored_for_a_replay(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    compute = compute_service()
    slow = StaticService("slow", [record("acct-1", "vol-1", "vcpu", "7200", "vCPU-second")], delay=2)
    async with (
        serving(connection, topology, compute, slow),
        coordinator(amqp_url, topology, ["ghost", "compute", "slow"], deadline_seconds=20) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        building = asyncio.create_task(running.run_period(PERIOD))
        [announced] = await reports.wait_for(1)
        answered_when_announced = slow.answered
        run = await building
        stored = await running.app.store.replies(run.key.report_id)
        record_after = await running.app.store.get(run.key.report_id)

    assert isinstance(run.outcome, Aborted)
    assert announced["reasons"] == [
        {"code": "unroutable", "service": "ghost", "message": run.outcome.report.reasons[0].message}
    ]
    assert answered_when_announced == 0  # announced before the slow service had even answered
    assert (stored["ghost"].state, stored["ghost"].reason_code) == ("failed", "unroutable")
    assert (stored["compute"].state, stored["compute"].records) == ("ok", 1)
    assert (stored["slow"].state, stored["slow"].records) == ("ok", 1)
    assert record_after is not None and record_after.owner is None  # done collecting: lease released


async def test_after_the_reply_channel_is_lost_the_next_report_opens_a_new_one(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with (
        serving(connection, topology, compute_service()),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        channel = running.app.gatherer.channel
        assert channel is not None
        await channel.close()  # as when the broker closes it
        run = await running.run_period(PERIOD)

    assert isinstance(run.outcome, Completed)
    assert running.app.gatherer.channel is not channel
