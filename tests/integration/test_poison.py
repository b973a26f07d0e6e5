"""No poison report: absurd input is refused at once, a failing build is retried a bounded number of
times and then aborted as ``internal``, and a short store outage delays a period without parking it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.exc import OperationalError

from accounting.amqp.scheduler import close_period
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted
from accounting.service import coordinator as coordinator_module
from accounting.service import pricer
from accounting.store.repository import ReportStore
from contracts import AbortCode, Period, Topology, UsageRequest
from tests.integration.support import (
    StaticService,
    coordinator,
    listening,
    raw_service,
    record,
    serving,
)

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


def one_record_with(quantity: str) -> Callable[[UsageRequest], list[bytes]]:
    def answer(request: UsageRequest) -> list[bytes]:
        reply = {
            "schema_version": "1.2",
            "request_id": request.request_id,
            "service": request.service,
            "status": "ok",
            "records": [
                {
                    "account_id": "acct-1",
                    "resource_id": "vm-1",
                    "resource_type": "vm",
                    "metric": "vcpu",
                    "quantity": quantity,
                    "unit": "vCPU-second",
                }
            ],
        }
        return [json.dumps(reply).encode()]

    return answer


@pytest.mark.parametrize("quantity", ["1e999999999", "1e999999", "9" * 200_000], ids=["e9", "e6", "digits"])
async def test_an_absurd_quantity_is_an_invalid_reply_at_once_not_at_the_deadline(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, quantity: str
) -> None:
    async with (
        raw_service(connection, topology, "echo", one_record_with(quantity)),
        coordinator(amqp_url, topology, ["echo"], deadline_seconds=600) as running,
    ):
        run = await running.run_period(PERIOD)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("echo", AbortCode.INVALID_REPLY)
    assert "records.0.quantity" in reason.message


async def test_an_unexpected_error_while_pricing_aborts_the_report_as_internal(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a rounding nobody foresaw")

    monkeypatch.setattr(pricer, "price_window", broken)
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], pricing_processes=0) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        with pytest.raises(ValueError, match="rounding"):
            await running.run_period(PERIOD)
        [announced] = await reports.wait_for(1)
        latest = await running.app.store.latest(PERIOD.period_id)

    assert latest is not None and latest.status is ReportStatus.ABORTED
    assert announced["schema_version"] == "2.1"
    [reason] = announced["reasons"]
    assert reason["code"] == "internal"
    assert "pricing failed: ValueError: a rounding nobody foresaw" in reason["message"]


async def test_a_build_failing_for_a_transient_reason_is_retried_then_aborted_never_resumed_forever(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def locked(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(ReportStore, "record_units", locked)
    monkeypatch.setattr(coordinator_module, "RETRY_BACKOFF", timedelta(seconds=0.2))
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    settings: dict[str, Any] = {"max_build_attempts": 2, "resume_every_seconds": 0.2}
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], **settings) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        await close_period(connection, topology, PERIOD, "test")
        [announced] = await reports.wait_for(1, timeout=60)
        latest = await running.app.store.latest(PERIOD.period_id)
        history = [] if latest is None else await running.app.store.history(latest.report_id)

    assert latest is not None and (latest.status, latest.build_attempts) == (ReportStatus.ABORTED, 2)
    assert len(compute.calls) == 2  # gathered twice, aborted on the second failure
    [reason] = announced["reasons"]
    assert reason["code"] == "internal"
    assert "(attempt 2 of 2): OperationalError" in reason["message"]
    assert sum("resumed" in step.reason for step in history) == 1


async def test_a_short_store_outage_while_accepting_a_period_delays_it_and_never_parks_it(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        real_accept = running.app.coordinator.accept
        failures = [0]

        async def flaky(event: Any) -> Any:
            if failures[0] < 6:  # more than the queue's delivery limit, were each one a redelivery
                failures[0] += 1
                raise OperationalError("INSERT ...", {}, Exception("could not connect to server"))
            return await real_accept(event)

        monkeypatch.setattr(running.app.coordinator, "accept", flaky)
        await close_period(connection, topology, PERIOD, "test")
        run = await running.next_run(timeout=60)
        channel = await connection.channel()
        dead = await channel.declare_queue(topology.dead_letters_queue.name, passive=True)
        await channel.close()
        consumer = running.app.consumer

    assert failures[0] == 6
    assert run.key.period.period_id == PERIOD.period_id
    assert consumer is not None and consumer.handled == 1
    assert dead.declaration_result.message_count == 0


async def test_the_report_aborted_event_is_version_2_with_an_open_set_of_codes(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with (
        coordinator(amqp_url, topology, ["ghost"]) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        await running.run_period(PERIOD)
        [announced] = await reports.wait_for(1)

    assert (announced["schema_version"], announced["reasons"][0]["code"]) == ("2.1", "unroutable")
