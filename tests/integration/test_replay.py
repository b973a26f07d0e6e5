"""Operator replay over the real broker: a new revision, idempotent, refused when it would be wrong.

Reports are driven directly (``consume=False``) on a SQLite store file, so each test can look at
every revision afterwards.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted, Completed
from accounting.service.queries import report_detail
from accounting.service.replay import ReplayRefused, plan_replay, replay
from accounting.store.repository import ReportRecord
from contracts import Period, Topology, UsageRecord, invoice_id, report_id
from tests.integration.support import RunningCoordinator, StaticService, coordinator, record, serving

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"


def vcpu_hours(account: str, hours: int) -> UsageRecord:
    """``hours`` vCPU-hours at 0.0320: 10 hours cost 0.32."""
    return record(account, f"vm-{account}", "vcpu", str(hours * 3600), "vCPU-second")


def object_storage(account: str, gb_months: int) -> UsageRecord:
    """``gb_months`` GB-months at 0.0230: 100 cost 2.30."""
    return record(account, f"bkt-{account}", "object_storage", str(gb_months), "GB-month", kind="bucket")


def broken_service() -> StaticService:
    # The delay lets compute's reply arrive before the failure settles the gather (fail fast
    # ignores replies after that), so revision 1 stores a good reply from compute.
    return StaticService("broken", delay=0.5, error=RuntimeError("usage database is unreachable"))


async def revisions(running: RunningCoordinator) -> list[tuple[int, ReportStatus]]:
    return [(report.revision, report.status) for report in await running.app.store.list_reports("2026-10")]


async def complete_first_revision(running: RunningCoordinator) -> None:
    first = await running.run_period(PERIOD)
    assert isinstance(first.outcome, Completed)
    await running.wait_until(first, ReportStatus.COMPLETED)


async def test_replaying_the_failed_service_reuses_the_stored_reply_of_the_others(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    broken = broken_service()
    async with (
        serving(connection, topology, compute, broken),
        coordinator(amqp_url, topology, ["compute", "broken"], consume=False, store_url=store_url) as running,
    ):
        first = await running.run_period(PERIOD)
        broken.error = None
        broken.records = [object_storage("acct-2", 100)]
        run = await replay(running.app.coordinator, "2026-10", services=["broken"])
        await running.wait_until(run, ReportStatus.COMPLETED)
        stored = await running.app.store.get(run.key.report_id)
        assert stored is not None
        detail = await report_detail(running.app.store, stored)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(first.outcome, Aborted)
    assert isinstance(run.outcome, Completed)
    assert run.key.revision == 2
    assert len(compute.calls) == 1
    assert len(broken.calls) == 2
    assert list(run.carried) == ["compute"]
    assert run.carried["compute"].carried_from == first.key.report_id
    assert run.records == {"compute": 1, "broken": 1}
    assert (stored.requested, stored.carried_from) == (("broken",), first.key.report_id)
    assert {service["service"]: service["carried_from"] for service in detail["services"]} == {
        "compute": str(first.key.report_id),
        "broken": None,
    }
    assert {invoice.account_id: (invoice.invoice_id, invoice.total) for invoice in invoices} == {
        "acct-1": (invoice_id("acct-1", "2026-10", 2), Decimal("0.32")),
        "acct-2": (invoice_id("acct-2", "2026-10", 2), Decimal("2.30")),
    }


async def test_replaying_every_service_asks_each_service_again(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    broken = StaticService("broken", error=RuntimeError("usage database is unreachable"))
    async with (
        serving(connection, topology, compute, broken),
        coordinator(amqp_url, topology, ["compute", "broken"], consume=False, store_url=store_url) as running,
    ):
        first = await running.run_period(PERIOD)
        broken.error = None
        run = await replay(running.app.coordinator, "2026-10")
        await running.wait_until(run, ReportStatus.COMPLETED)
        stored = await running.app.store.get(run.key.report_id)

    assert isinstance(first.outcome, Aborted)
    assert isinstance(run.outcome, Completed)
    assert run.key.revision == 2
    assert (len(compute.calls), len(broken.calls)) == (2, 2)
    assert run.carried == {}
    assert stored is not None
    assert (stored.requested, stored.carried_from, stored.supersedes) == (("compute", "broken"), None, None)


async def test_a_completed_period_is_replayed_only_with_force(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        await complete_first_revision(running)
        with pytest.raises(ReplayRefused, match="run again with --force to do that"):
            await replay(running.app.coordinator, "2026-10")
        left = await revisions(running)

    assert left == [(1, ReportStatus.COMPLETED)]
    assert len(compute.calls) == 1


async def test_a_forced_replay_supersedes_each_invoice_of_the_completed_revision(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10), vcpu_hours("acct-2", 100)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        await complete_first_revision(running)
        compute.records = [vcpu_hours("acct-1", 20), vcpu_hours("acct-2", 100)]
        run = await replay(running.app.coordinator, "2026-10", force=True)
        await running.wait_until(run, ReportStatus.COMPLETED)
        stored = await running.app.store.get(run.key.report_id)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert run.key.revision == 2
    assert stored is not None
    assert stored.supersedes == report_id("2026-10", 1)
    # Only acct-1's charge changed: acct-2 still owes its first invoice, and gets nothing new.
    assert {
        invoice.account_id: (invoice.invoice_id, invoice.supersedes, invoice.total) for invoice in invoices
    } == {
        "acct-1": (invoice_id("acct-1", "2026-10", 2), invoice_id("acct-1", "2026-10", 1), Decimal("0.64")),
    }


async def test_a_forced_replay_gives_a_vanished_account_an_empty_invoice_superseding_its_old_one(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10), vcpu_hours("acct-2", 100)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        await complete_first_revision(running)
        compute.records = [vcpu_hours("acct-1", 10)]
        run = await replay(running.app.coordinator, "2026-10", force=True)
        await running.wait_until(run, ReportStatus.COMPLETED)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed)
    vanished = {invoice.account_id: invoice for invoice in invoices}["acct-2"]
    assert (vanished.invoice_id, vanished.supersedes) == (
        invoice_id("acct-2", "2026-10", 2),
        invoice_id("acct-2", "2026-10", 1),
    )
    assert (vanished.lines, vanished.total) == ((), Decimal("0.00"))
    assert list(invoices) == [vanished]  # acct-1's charge is the same: nothing to correct
    assert run.outcome.report.total == Decimal("0.00")  # what this revision issued


async def test_replaying_a_service_of_a_completed_report_is_refused(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        await complete_first_revision(running)
        with pytest.raises(ReplayRefused) as refused:
            await replay(running.app.coordinator, "2026-10", services=["compute"])
        left = await revisions(running)

    assert str(refused.value) == (
        "--service replays the failed services of an aborted report; period 2026-10 revision 1 is "
        "completed (replay every service with --force instead)"
    )
    assert left == [(1, ReportStatus.COMPLETED)]


async def test_replaying_a_service_the_report_does_not_have_is_refused(
    amqp_url: str, topology: Topology, store_url: str
) -> None:
    async with coordinator(amqp_url, topology, ["ghost"], consume=False, store_url=store_url) as running:
        await running.run_period(PERIOD)
        with pytest.raises(ReplayRefused) as refused:
            await replay(running.app.coordinator, "2026-10", services=["storage"])
        left = await revisions(running)

    assert str(refused.value) == "not a service of period 2026-10 revision 1: storage (its services: ghost)"
    assert left == [(1, ReportStatus.ABORTED)]


async def test_replaying_one_failed_service_while_another_failed_too_is_refused_naming_it(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    broken = StaticService("broken", error=RuntimeError("usage database is unreachable"))
    async with (
        serving(connection, topology, broken),
        coordinator(amqp_url, topology, ["broken", "ghost"], consume=False, store_url=store_url) as running,
    ):
        first = await running.run_period(PERIOD)
        with pytest.raises(ReplayRefused) as refused:
            await replay(running.app.coordinator, "2026-10", services=["ghost"])
        left = await revisions(running)

    assert isinstance(first.outcome, Aborted)
    assert str(refused.value) == (
        "revision 1 of period 2026-10 also lacks a good reply from broken: replay it too "
        "(--service broken) or replay every service"
    )
    assert left == [(1, ReportStatus.ABORTED)]


async def test_replaying_a_period_without_a_report_is_refused(
    amqp_url: str, topology: Topology, store_url: str
) -> None:
    async with coordinator(amqp_url, topology, ["ghost"], consume=False, store_url=store_url) as running:
        with pytest.raises(ReplayRefused) as refused:
            await replay(running.app.coordinator, "2031-01", services=["ghost"])
        left = await running.app.store.list_reports()

    assert str(refused.value) == "period 2031-01 has no report to replay; close the period first"
    assert left == []


async def test_two_concurrent_replays_of_a_period_make_one_revision(
    amqp_url: str, topology: Topology, store_url: str
) -> None:
    async with coordinator(amqp_url, topology, ["ghost"], consume=False, store_url=store_url) as running:
        await running.run_period(PERIOD)
        results = await asyncio.gather(
            plan_replay(running.app.coordinator, "2026-10"),
            plan_replay(running.app.coordinator, "2026-10"),
            return_exceptions=True,
        )
        left = await revisions(running)

    planned = [result for result in results if isinstance(result, ReportRecord)]
    refused = [result for result in results if isinstance(result, ReplayRefused)]
    assert [record.revision for record in planned] == [2]
    assert [str(refusal) for refusal in refused] == [
        "a replay of period 2026-10 is already running (revision 2); not starting another"
    ]
    assert left == [(1, ReportStatus.ABORTED), (2, ReportStatus.PENDING)]


async def test_a_replay_while_the_latest_revision_is_being_built_is_refused(
    amqp_url: str, topology: Topology, store_url: str
) -> None:
    async with coordinator(amqp_url, topology, ["ghost"], consume=False, store_url=store_url) as running:
        await running.run_period(PERIOD)
        await plan_replay(running.app.coordinator, "2026-10")
        with pytest.raises(ReplayRefused) as refused:
            await replay(running.app.coordinator, "2026-10")
        left = await revisions(running)

    assert str(refused.value) == (
        "period 2026-10 revision 2 is still being built (pending); wait for it to finish"
    )
    assert left == [(1, ReportStatus.ABORTED), (2, ReportStatus.PENDING)]


async def test_a_period_with_invoices_in_an_earlier_revision_needs_force_even_after_an_abort(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        await complete_first_revision(running)
        compute.error = RuntimeError("store offline")
        second = await replay(running.app.coordinator, "2026-10", force=True)
        with pytest.raises(ReplayRefused, match="invoices issued by revision 1"):
            await replay(running.app.coordinator, "2026-10")
        left = await revisions(running)

    assert isinstance(second.outcome, Aborted)
    assert left == [(1, ReportStatus.COMPLETED), (2, ReportStatus.ABORTED)]


async def test_a_replay_first_finishes_a_revision_whose_builder_died(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 10)])
    broken = StaticService("broken", error=RuntimeError("usage database is unreachable"))
    async with (
        serving(connection, topology, compute, broken),
        coordinator(amqp_url, topology, ["compute", "broken"], consume=False, store_url=store_url) as running,
    ):
        await running.run_period(PERIOD)
        broken.error = None
        stranded = await plan_replay(running.app.coordinator, "2026-10")  # its replay process then died
        await running.app.store.release(stranded.report_id, stranded.created_at)
        run = await replay(running.app.coordinator, "2026-10")
        await running.wait_until(run, ReportStatus.COMPLETED)
        left = await revisions(running)

    assert run.key.report_id == stranded.report_id
    assert left == [(1, ReportStatus.ABORTED), (2, ReportStatus.COMPLETED)]
