"""A whole period over the real broker: scheduler → coordinator → compute and storage → invoices.

The sub-services are the real compute and storage services on their own SQLite stores, served
by the SDK in this process; the totals below are worked out by hand from the stores' contents.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from contracts import Period, Topology, invoice_id
from payments.consumer import PaymentConsumer
from tests.integration.support import TEST_CARD, coordinator, eventually, listening, serving
from workers.compute.service import ComputeService
from workers.compute.store import ComputeStore
from workers.compute.usage import InstanceEvent
from workers.storage.service import StorageService
from workers.storage.store import StorageStore
from workers.storage.usage import SizeSample

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")  # 31 days = 744 hours
GB = 10**9


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[ComputeService]:
    with ComputeStore(tmp_path / "compute.sqlite3") as store:
        store.record_many(
            [
                # acct-a: 2 vCPU / 4096 MiB for the whole period (created before it, still running).
                InstanceEvent("vm-a1", "acct-a", "create", at("2026-09-15"), 2, 4096),
                # acct-b: created inside, resized from 4 to 8 vCPU, deleted inside (10.5 days).
                InstanceEvent("vm-b1", "acct-b", "create", at("2026-10-10"), 4, 8192),
                InstanceEvent("vm-b1", "acct-b", "resize", at("2026-10-15"), 8, 8192),
                InstanceEvent("vm-b1", "acct-b", "delete", at("2026-10-20T12:00")),
                # acct-c: stopped before the period, still listed with zero usage.
                InstanceEvent("vm-c1", "acct-c", "create", at("2026-09-01"), 1, 1024),
                InstanceEvent("vm-c1", "acct-c", "resize", at("2026-09-20"), 0, 0),
            ]
        )
    yield ComputeService(tmp_path / "compute.sqlite3")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[StorageService]:
    with StorageStore(tmp_path / "storage.sqlite3") as store:
        store.record_samples(
            [
                # acct-a: 200 GB all period, 100 GB-month included by its subscription.
                SizeSample("vol-a1", "acct-a", "volume", at("2026-09-01"), 200 * GB),
                # acct-b: a 50 GB bucket for the second half of the period (15.5 of 31 days).
                SizeSample("bkt-b1", "acct-b", "bucket", at("2026-10-16T12:00"), 50 * GB),
                # acct-c: a volume deleted before the period: not billed.
                SizeSample("vol-c1", "acct-c", "volume", at("2026-08-01"), 10 * GB),
                SizeSample("vol-c1", "acct-c", "volume", at("2026-09-30"), None),
            ]
        )
        store.set_subscription("acct-a", "100 GB")
    yield StorageService(tmp_path / "storage.sqlite3")


# Worked by hand with TEST_CARD (vcpu 0.0320/h, memory 0.0040/GB-h, block storage graduated
# 0.100 up to 50 GB-month then 0.080, object storage 0.0230/GB-month), half-even to cents:
EXPECTED_TOTALS = {
    # 1488 vCPU-h = 47.616 → 47.62; 3195.455668 GB-h → 12.78; 100 GB-month = 50x0.100 + 50x0.080 = 9.00
    "acct-a": Decimal("69.40"),
    # 480 + 1056 vCPU-h = 49.152 → 49.15; 2164.663517 GB-h → 8.66; 25 GB-month x 0.0230 = 0.575 → 0.58
    "acct-b": Decimal("58.39"),
    # a stopped instance: listed, priced at zero
    "acct-c": Decimal("0.00"),
}


async def test_a_period_produces_one_invoice_per_account_with_exact_totals(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    compute: ComputeService,
    storage: StorageService,
) -> None:
    async with (
        serving(connection, topology, compute, storage),
        coordinator(amqp_url, topology, ["compute", "storage"]) as running,
        listening(connection, topology.reports.name) as reports,
        listening(connection, topology.invoices.name) as invoice_events,
    ):
        payments = await PaymentConsumer.start(connection, topology)
        await close_period(connection, topology, PERIOD, requested_by="test scheduler")
        run = await running.next_run()
        [completed] = await reports.wait_for(1)
        await eventually(lambda: len(payments.invoices) == 3)
        await invoice_events.wait_for(3)
        await payments.stop()
        await running.wait_until(run, ReportStatus.COMPLETED)
        history = await running.app.store.history(run.key.report_id)
        stored = await running.app.store.get(run.key.report_id)

    assert isinstance(run.outcome, Completed)
    assert [t.status for t in history] == [
        ReportStatus.PENDING,
        ReportStatus.GATHERING,
        ReportStatus.NORMALIZING,
        ReportStatus.PRICING,
        ReportStatus.PUBLISHING,
        ReportStatus.COMPLETED,
    ]
    received = {invoice.account_id: invoice for invoice in payments.invoices.values()}
    assert {account: invoice.total for account, invoice in received.items()} == EXPECTED_TOTALS
    for account, invoice in received.items():
        assert invoice.invoice_id == invoice_id(account, "2026-10", 1)
        assert invoice.total == sum(line.amount for line in invoice.lines)
    vcpu_b = next(line for line in received["acct-b"].lines if line.item == "vcpu")
    assert (vcpu_b.quantity, vcpu_b.unit, vcpu_b.amount) == (
        Decimal("1536.000000"),
        "vCPU-hour",
        Decimal("49.15"),
    )
    assert {line.item: line.quantity for line in received["acct-c"].lines} == {"vcpu": 0, "memory": 0}

    assert payments.duplicates == 0
    assert stored is not None
    assert stored.rate_card == TEST_CARD.model_dump(mode="json")
    assert Decimal(completed["total"]) == Decimal("127.79")
    assert (completed["schema_version"], completed["invoice_count"]) == ("2.0", len(EXPECTED_TOTALS))
    assert {p["message_id"] for p in invoice_events.properties} == {
        str(invoice_id(account, "2026-10", 1)) for account in EXPECTED_TOTALS
    }
    assert {p["delivery_mode"] for p in invoice_events.properties} == {DeliveryMode.PERSISTENT}


async def test_a_second_period_closed_makes_no_second_report(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    compute: ComputeService,
    storage: StorageService,
) -> None:
    async with (
        serving(connection, topology, compute, storage),
        coordinator(amqp_url, topology, ["compute", "storage"]) as running,
        listening(connection, topology.reports.name) as reports,
    ):
        await close_period(connection, topology, PERIOD, requested_by="scheduler")
        await running.next_run()
        await close_period(connection, topology, PERIOD, requested_by="scheduler, again")
        await eventually(lambda: running.app.consumer is not None and running.app.consumer.handled == 2)
        await reports.wait_for(1)

    assert len(running.runs) == 1
    assert len(reports.messages) == 1


async def test_a_service_answering_in_chunks_is_reassembled(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    compute: ComputeService,
    storage: StorageService,
) -> None:
    async with (
        serving(connection, topology, compute, storage, chunk_size=1),
        coordinator(amqp_url, topology, ["compute", "storage"]) as running,
    ):
        run = await running.run_period(PERIOD)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed)
    assert run.records == {"compute": 6, "storage": 2}
    assert run.gather.services["compute"].chunks == 6
    assert {invoice.account_id: invoice.total for invoice in invoices} == EXPECTED_TOTALS
