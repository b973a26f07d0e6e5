"""The fault suite: a whole deployment in real processes, and a fault injected from outside while it
closes a period. Whatever the fault, every invoice of a completed report reaches the payment side
once after de-duplication, with the totals the in-memory reference pipeline gives the same data.
Each scenario is added to the one-line fault summary printed at the end of ``make test``."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.core.lifecycle import ReportStatus
from contracts import AbortCode, InvoiceIssued, Topology, report_id
from tests.e2e.platform import Platform, broker_connection_names, expected_totals, named, platform
from tests.faults import LEDGER
from tests.integration.support import eventually
from tests.postgres import POSTGRES_URL, fresh_database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

SLOW_ANSWER = {"chunk_size": "2", "publish_window": "1"}
"""With ``MANY`` accounts, a storage answer of thousands of chunks, each confirmed before the next:
seconds long, time to hit it."""
MANY = 3000


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"


async def settle(running: Platform, scenario: str, *, aborted: int = 0) -> list[InvoiceIssued]:
    """Wait for the report's invoices to be paid; check their totals; record the scenario."""
    await running.until(ReportStatus.COMPLETED)
    report = await running.report()
    assert report is not None
    invoices = await running.issued(report.report_id)
    await running.until_paid(invoices)
    expected = await expected_totals(running.workdir, running.period)
    assert {invoice.account_id: str(invoice.total) for invoice in invoices} == expected
    LEDGER.record(
        scenario,
        completed=1,
        aborted=aborted,
        issued=[invoice.invoice_id for invoice in invoices],
        handled=running.handled.elements(),
    )
    assert all(count == 1 for count in running.handled.values())
    return invoices


async def test_a_worker_killed_mid_answer_answers_again_and_the_two_answers_are_never_mixed(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path, sqlite_url: str
) -> None:
    async with platform(amqp_url, connection, topology, tmp_path, sqlite_url, accounts=MANY) as running:
        await running.start_worker("compute")
        await running.start_worker("storage", **SLOW_ANSWER)
        await running.start_coordinator()
        await running.close_period()

        async def answering() -> bool:
            return await running.chunks_stored("storage") >= 20

        await eventually(answering, timeout=60)
        await running.kill("storage")  # its request was not acknowledged: the broker redelivers it
        await running.start_worker("storage")
        await settle(running, "worker SIGKILLed mid-answer")
        bodies = await running.store.reply_bodies(running.report_id, "storage")

    assert len({_answer_id(body) for body in bodies}) == 2  # two computations, the first dropped


@pytest.mark.parametrize("stage", [ReportStatus.GATHERING, ReportStatus.PRICING, ReportStatus.PUBLISHING])
async def test_a_coordinator_killed_at_each_stage_and_restarted_completes_the_report(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    tmp_path: Path,
    sqlite_url: str,
    stage: ReportStatus,
) -> None:
    slow = {"pricing_page_records": "40", "relay_window": "5"}
    accounts = MANY if stage is ReportStatus.GATHERING else 300
    async with platform(amqp_url, connection, topology, tmp_path, sqlite_url, accounts=accounts) as running:
        await running.start_worker("compute")
        await running.start_worker("storage", **(SLOW_ANSWER if stage is ReportStatus.GATHERING else {}))
        await running.start_coordinator(**slow)
        await running.close_period()
        later = list(ReportStatus)[list(ReportStatus).index(stage) :]
        await running.until(*later)
        await running.kill("coordinator")
        killed_at = await running.report()
        await running.start_coordinator(**slow)
        await settle(running, f"coordinator SIGKILLed while {stage}")

    assert killed_at is not None and killed_at.status in later


async def test_the_brokers_closing_the_coordinators_connection_mid_gather_aborts_then_a_replay_completes(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path, sqlite_url: str
) -> None:
    async with platform(amqp_url, connection, topology, tmp_path, sqlite_url, accounts=MANY) as running:
        await running.start_worker("compute")
        await running.start_worker("storage", **SLOW_ANSWER)
        await running.start_coordinator()
        await running.close_period()

        async def answering() -> bool:
            return await running.chunks_stored("storage") >= 10

        await eventually(answering, timeout=60)
        await close_connections(f"reckon coordinator {topology.namespace}")
        await running.until(ReportStatus.ABORTED)
        first = await running.report()
        assert first is not None
        reasons = await running.store.history(first.report_id)
        replay = await running.start(
            "replay", "-m", "accounting.cli", "replay", "2026-10", "--service", "storage"
        )
        assert await asyncio.wait_for(replay.wait(), 180) == 0, running.workdir.joinpath(
            "replay.log"
        ).read_text()
        invoices = await settle(running, "broker closed the coordinator's connection mid-gather", aborted=1)

    assert AbortCode.TRANSPORT_LOST.value in reasons[-1].reason
    assert {invoice.report_id for invoice in invoices} == {report_id("2026-10", 2)}


async def test_the_brokers_closing_the_coordinators_connection_mid_relay_delays_and_loses_nothing(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path, sqlite_url: str
) -> None:
    async with platform(amqp_url, connection, topology, tmp_path, sqlite_url) as running:
        await running.start_worker("compute")
        await running.start_worker("storage")
        await running.start_coordinator(relay_window="5")
        await running.close_period()
        await running.until(ReportStatus.PUBLISHING, ReportStatus.COMPLETED)
        await eventually(lambda: len(running.handled) >= 30, timeout=60)
        await close_connections(f"reckon coordinator {topology.namespace}")
        await settle(running, "broker closed the coordinator's connection mid-relay")


async def test_a_publisher_confirm_that_never_arrives_delays_the_invoices_and_loses_none(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path, sqlite_url: str
) -> None:
    """A broker over its memory watermark blocks publishers: no confirm comes until it recovers."""
    async with platform(amqp_url, connection, topology, tmp_path, sqlite_url) as running:
        await running.start_worker("compute")
        await running.start_worker("storage")
        await running.start_coordinator(relay_window="5")
        await running.close_period()
        await running.until(ReportStatus.PUBLISHING, ReportStatus.COMPLETED)
        await eventually(lambda: len(running.handled) >= 30, timeout=60)
        watermark = await rabbitmq_eval("vm_memory_monitor:get_vm_memory_high_watermark().")
        try:
            await rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
            await asyncio.sleep(4)
            blocked = len(running.handled)
        finally:
            await rabbitmqctl("set_vm_memory_high_watermark", watermark.strip())
        await settle(running, "publisher confirms withheld by a blocked broker")

    assert blocked < 300  # the relay was held up, not finished, while the broker was blocked


async def test_the_store_refusing_connections_mid_build_delays_the_report_and_loses_nothing(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    async with fresh_database() as url:
        database = url.rsplit("/", 1)[1]
        async with platform(amqp_url, connection, topology, tmp_path, url, accounts=MANY) as running:
            await running.start_worker("compute")
            await running.start_worker("storage", **SLOW_ANSWER)
            await running.start_coordinator()
            await running.close_period()

            async def answering() -> bool:
                return await running.chunks_stored("storage") >= 10

            await eventually(answering, timeout=60)
            await refuse_connections(database, True)  # the coordinator is writing chunks right now
            try:
                await asyncio.sleep(4)
            finally:
                await refuse_connections(database, False)
            await settle(running, "store unreachable mid-build")
            report = await running.report()

    assert report is not None and report.build_attempts >= 2


async def close_connections(client_name: str) -> None:
    names = await broker_connection_names(named(client_name))
    assert names, f"no broker connection named {client_name!r}"
    for name in names:
        await rabbitmqctl("close_connection", name, "fault suite: closed by the broker")


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, error = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {error.decode()}"


async def rabbitmq_eval(expression: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "eval", expression, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output, error = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, error.decode()
    return output.decode()


async def refuse_connections(database: str, refuse: bool) -> None:
    """PostgreSQL stops (or resumes) taking connections to ``database`` and drops the open ones."""
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(
                text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"false" if refuse else "true"}')
            )
            if refuse:
                await connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": database},
                )
    finally:
        await admin.dispose()


def _answer_id(body: str) -> str | None:
    chunk = json.loads(body).get("chunk") or {}
    answer = chunk.get("answer_id")
    return None if answer is None else str(answer)
