"""The streamed pipeline over the real broker: replies stored as they arrive, reports priced from the
store, the same invoices as before to the byte, a hole in an answer, and leases that hold."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.calendar import BillingCalendar
from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import DRAFT_INVOICE_FIELDS
from accounting.core.report import Aborted, Completed
from accounting.runtime.settings import load_rate_card
from accounting.service.replay import replay
from accounting.store.repository import LeaseLost
from contracts import (
    AbortCode,
    Chunk,
    InvoiceIssued,
    Period,
    PeriodClosed,
    Topology,
    UsageRecord,
    UsageReply,
    UsageRequest,
)
from tests.golden.synthetic import PERIOD_ID as SYNTHETIC_PERIOD
from tests.golden.synthetic import synthetic_records
from tests.integration.support import StaticService, coordinator, eventually, raw_service, record, serving
from workers.compute.seed import seed as seed_compute
from workers.compute.service import ComputeService
from workers.storage.seed import seed as seed_storage
from workers.storage.service import StorageService

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CARD = load_rate_card(ROOT / "config" / "rate-card.toml")


async def test_the_demo_data_gives_exactly_the_invoices_of_the_in_memory_pipeline(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    golden = json.loads((GOLDEN / "demo-2026-10-invoices.json").read_text())
    period = Period.month(golden["period"])
    seed_compute(tmp_path / "compute.sqlite3", period, accounts=golden["accounts"])
    seed_storage(tmp_path / "storage.sqlite3", period, accounts=golden["accounts"])
    services = (ComputeService(tmp_path / "compute.sqlite3"), StorageService(tmp_path / "storage.sqlite3"))
    async with (
        serving(connection, topology, *services, chunk_size=7),
        coordinator(amqp_url, topology, ["compute", "storage"], card=CARD) as running,
    ):
        run = await running.run_period(period)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed)
    assert [json.loads(as_priced_in_2_0(invoice)) for invoice in invoices] == golden["invoices"]
    assert [invoice.number for invoice in invoices] == [
        f"INV-2026-{n:06d}" for n in range(1, len(invoices) + 1)
    ]
    assert (str(run.outcome.report.total), run.outcome.report.records) == (golden["total"], golden["records"])


def as_priced_in_2_0(invoice: InvoiceIssued) -> str:
    """The invoice's body as 2.0 wrote it: 2.1 only added the number and dates its issue stamps
    (tests/golden/README.md), so the priced part must be byte for byte the golden's."""
    return invoice.model_copy(update={"schema_version": "2.0"}).model_dump_json(exclude=DRAFT_INVOICE_FIELDS)


@pytest.mark.parametrize("processes", [2, 0], ids=["priced in processes", "priced in a thread"])
async def test_a_50000_record_answer_in_100_chunks_gives_the_same_invoices_to_the_byte(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, processes: int
) -> None:
    golden = json.loads((GOLDEN / "synthetic-50k-digest.json").read_text())
    chunky = StaticService("chunky", [UsageRecord.model_validate(r) for r in synthetic_records()])
    async with (
        serving(connection, topology, chunky, chunk_size=500),
        coordinator(
            amqp_url, topology, ["chunky"], card=CARD, deadline_seconds=120, pricing_processes=processes
        ) as running,
    ):
        # The golden was made for 2031-03, a month that has not ended: the billing calendar came
        # later. Settled ten years early, it accepts it; the invoices must not change.
        running.app.coordinator.calendar = BillingCalendar(settle=-timedelta(days=3650))
        run = await running.run_period(Period.month(SYNTHETIC_PERIOD))
        stored = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed)
    assert run.gather.services["chunky"].chunks == 100
    digest = hashlib.sha256()
    for invoice in stored:
        digest.update(as_priced_in_2_0(invoice).encode() + b"\n")
    assert (len(stored), str(run.outcome.report.total)) == (golden["invoices"], golden["total"])
    assert (run.outcome.report.records, digest.hexdigest()) == (golden["records"], golden["sha256"])
    priced = next(t for t in run.history.transitions if t.status is ReportStatus.PUBLISHING)
    assert "in 3 window(s)" in priced.reason  # 20,000 records a window


def holey_answer(request: UsageRequest) -> list[bytes]:
    """Three chunks, the middle one lost on the way."""
    return [
        UsageReply(
            request_id=request.request_id,
            service=request.service,
            status="ok",
            records=(record(f"acct-{seq}", f"vm-{seq}", "vcpu", "3600", "vCPU-second"),),
            chunk=Chunk(seq=seq, last=seq == 2, total_records=3),
        ).to_json()
        for seq in (0, 2)
    ]


async def test_a_missing_middle_chunk_aborts_the_report_as_incomplete(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with (
        raw_service(connection, topology, "chunky", holey_answer),
        coordinator(amqp_url, topology, ["chunky"], deadline_seconds=2) as running,
    ):
        run = await running.run_period(Period.month("2026-10"))

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("chunky", AbortCode.INCOMPLETE)
    assert "2 chunk(s) received, missing seq 1" in reason.message


async def test_a_replay_of_the_missing_service_reuses_answers_that_came_after_the_abort(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    """As an operator would: a third configured service is missing, the others answer a moment
    after the report aborted; once it is deployed, replaying it alone completes the period."""
    compute = StaticService("compute", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")])
    slow = StaticService("slow", [record("acct-2", "vm-2", "vcpu", "7200", "vCPU-second")], delay=0.5)
    ghost = StaticService("ghost", [record("acct-3", "vm-3", "vcpu", "36000", "vCPU-second")])
    store_url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
    async with (
        serving(connection, topology, compute, slow),
        coordinator(amqp_url, topology, ["compute", "slow", "ghost"], store_url=store_url) as running,
    ):
        first = await running.run_period(Period.month("2026-10"))
        assert isinstance(first.outcome, Aborted)
        async with serving(connection, topology, ghost):
            second = await replay(running.app.coordinator, "2026-10", services=["ghost"])
        invoices = await running.app.store.invoices(report_id=second.key.report_id)

    assert isinstance(second.outcome, Completed)
    assert (len(compute.calls), len(slow.calls), len(ghost.calls)) == (1, 1, 1)
    assert {name: reply.carried_from for name, reply in second.replies.items()} == {
        "compute": first.key.report_id,
        "slow": first.key.report_id,
        "ghost": None,
    }
    assert {invoice.account_id: str(invoice.total) for invoice in invoices} == {
        "acct-1": "0.03",
        "acct-2": "0.06",
        "acct-3": "0.32",
    }


async def test_a_report_longer_than_its_lease_is_not_taken_over_while_its_builder_lives(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    slow = StaticService("slow", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")], delay=7)
    store_url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
    overrides: dict[str, Any] = {"lease_seconds": 3, "resume_every_seconds": 0.3}
    async with (
        serving(connection, topology, slow),
        coordinator(amqp_url, topology, ["slow"], store_url=store_url, deadline_seconds=20, **overrides) as a,
        coordinator(amqp_url, topology, ["slow"], store_url=store_url, deadline_seconds=20, **overrides) as b,
    ):
        run = await a.run_period(Period.month("2026-10"))
        await a.wait_until(run, ReportStatus.COMPLETED)

    assert isinstance(run.outcome, Completed)
    assert len(slow.calls) == 1
    assert b.runs == []  # the other coordinator never resumed it
    assert not any("resumed" in transition.reason for transition in run.history.transitions)


async def test_a_coordinator_whose_report_was_taken_over_can_no_longer_write_to_it(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    slow = StaticService("slow", [record("acct-1", "vm-1", "vcpu", "3600", "vCPU-second")], delay=2)
    store_url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
    async with (
        serving(connection, topology, slow),
        coordinator(amqp_url, topology, ["slow"], store_url=store_url, consume=False) as a,
    ):
        store = a.app.store
        accepted = await a.app.coordinator.accept(PeriodClosed.for_period(Period.month("2026-10"), "test"))
        assert accepted is not None
        building = asyncio.create_task(a.app.coordinator.build(accepted))
        await eventually(lambda: len(slow.calls) == 1)
        # Another coordinator takes the report over, as if this one's lease had run out.
        await store.release(accepted.report_id, accepted.created_at)
        [taken] = await store.claim_abandoned("coordinator-b", accepted.created_at, accepted.created_at)
        with pytest.raises(LeaseLost):
            await building
        after = await store.get(accepted.report_id)
        history = await store.history(accepted.report_id)

    assert taken.report_id == accepted.report_id
    assert after is not None and (after.status, after.owner) == (ReportStatus.GATHERING, "coordinator-b")
    assert [transition.status for transition in history] == [ReportStatus.PENDING, ReportStatus.GATHERING]
