"""The network sub-service answering through the real broker: the coordinator gathers its chunks and
prices its egress with the rate card's existing ``egress`` item (config/rate-card.toml: packages of
100 GB at 5.00 EUR), and an empty store is refused rather than billed as nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted, Completed
from accounting.runtime.settings import load_rate_card
from conformance import run_conformance
from conformance.settings import ConformanceSettings
from contracts import AbortCode, Period, Topology
from tests.integration.support import coordinator, serving, serving_as
from tests.integration.test_least_privilege import role
from workers.network.seed import seed
from workers.network.service import NetworkService
from workers.network.store import NetworkStore
from workers.network.usage import CounterReading, network_usage
from workers.sdk.empty import GuardedService

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CARD = load_rate_card(ROOT / "config" / "rate-card.toml")
OCT = Period.month("2026-10")
GB = 10**9


def at(day: int, month: int = 10) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def charge(sent_bytes: int) -> Decimal:
    """The egress line's amount: GB rounded to 6 places, then 5.00 EUR per started 100 GB."""
    gigabytes = (Decimal(sent_bytes) / GB).quantize(Decimal("0.000001"))
    return (gigabytes / 100).to_integral_value(rounding=ROUND_CEILING) * Decimal("5.00")


async def test_egress_is_priced_by_the_rate_cards_egress_item(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    store = NetworkStore(tmp_path / "network.sqlite3")
    store.record_readings(
        [
            CounterReading("nic-1", "acct-0001", at(28, 9), 7 * GB),  # September's: the baseline
            CounterReading("nic-1", "acct-0001", at(10), 37 * GB),
            CounterReading("nic-1", "acct-0001", at(31), 67 * GB),  # 60 GB in October
            CounterReading("nic-2", "acct-0001", at(3), 100 * GB + GB // 2),  # attached in October
            CounterReading("nic-3", "acct-0002", at(20, 9), 123),
            CounterReading("nic-3", "acct-0002", at(20), 123),  # idle all October
        ]
    )
    store.set_plan("acct-0001", "10 GB")
    async with (
        serving(connection, topology, NetworkService(store.path), chunk_size=1),
        coordinator(amqp_url, topology, ["network"], card=CARD) as running,
    ):
        run = await running.run_period(OCT)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed), run.outcome
    assert run.records == {"network": 3}
    by_account = {invoice.account_id: invoice for invoice in invoices}
    [line] = by_account["acct-0001"].lines
    # 60 GB + 100.5 GB - 10 GB included = 150.5 GB: two started packages of 100 GB.
    assert (line.item, line.unit, line.quantity) == ("egress", "package of 100 GB", Decimal(2))
    assert by_account["acct-0001"].total == Decimal("10.00")
    [idle] = by_account["acct-0002"].lines
    assert (idle.quantity, by_account["acct-0002"].total) == (Decimal(0), Decimal("0.00"))


async def test_the_seeded_month_is_billed_as_the_reference_says_to_the_cent(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    path = tmp_path / "network.sqlite3"
    seed(path, OCT, accounts=25)
    stored = NetworkStore(path)
    sent: dict[str, int] = {}
    for record in network_usage(stored.readings(), stored.plans(), OCT):
        sent[record.account_id] = sent.get(record.account_id, 0) + int(record.quantity)
    async with (
        serving(connection, topology, NetworkService(path), chunk_size=7),
        coordinator(amqp_url, topology, ["network"], card=CARD) as running,
    ):
        run = await running.run_period(OCT)
        invoices = await running.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed), run.outcome
    assert {invoice.account_id for invoice in invoices} == set(sent)
    for invoice in invoices:
        assert invoice.total == charge(sent[invoice.account_id]), invoice.account_id
    assert run.outcome.report.total == sum(map(charge, sent.values()), Decimal(0))


async def test_an_empty_store_aborts_the_report_naming_the_service(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    empty = GuardedService(NetworkService(tmp_path / "network.sqlite3"))  # as `serve` runs it
    async with (
        serving(connection, topology, empty),
        coordinator(amqp_url, topology, ["network"], card=CARD) as running,
    ):
        run = await running.run_period(OCT)

    assert isinstance(run.outcome, Aborted)
    [reason] = run.outcome.report.reasons
    assert (reason.service, reason.code) == ("network", AbortCode.SERVICE_ERROR)
    assert "empty store" in reason.message


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl")
async def test_as_deployed_the_network_worker_answers_as_its_own_broker_user(
    amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    """The coordinator and the worker as the users of definitions.json (reckon-coordinator,
    reckon-network: read on usage.requests.network, write on the default exchange, no configure),
    the reply accepted from the user the component's RECKON_SERVICE_USERS names."""
    path = tmp_path / "network.sqlite3"
    seed(path, OCT, accounts=5)
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-network") as (network_user, network_url),
    ):
        worker = await aio_pika.connect_robust(network_url)
        try:
            async with (
                coordinator(
                    coordinator_url,
                    topology,
                    ["network"],
                    card=CARD,
                    consume=False,
                    service_users={"network": network_user},
                    dead_letters="policy",
                ) as running,
                serving_as(worker, topology, NetworkService(path), coordinator_user=coordinator_user),
            ):
                run = await running.run_period(OCT)
                await running.wait_until(run, ReportStatus.COMPLETED)
        finally:
            await worker.close()

    assert isinstance(run.outcome, Completed), run.outcome
    assert run.outcome.report.invoice_count == 5


async def test_the_network_worker_passes_the_conformance_kit(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    """`reckon conformance network` in-process: the kit plays the coordinator against the real
    worker on a seeded store, in chunks (every check but the optional impostor's passes)."""
    path = tmp_path / "network.sqlite3"
    seed(path, OCT, accounts=6)
    async with serving(connection, topology, NetworkService(path), chunk_size=4):
        result = await run_conformance(
            "network",
            settings=ConformanceSettings(amqp_url=amqp_url, namespace=topology.namespace),
            period=OCT,
            timeout=5.0,
            quiet=1.0,
            gap_seconds=1.0,
        )

    assert result.passed, result.explain()
    assert "chunk(s)" in result.check("answered").reason
