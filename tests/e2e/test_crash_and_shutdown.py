"""The coordinator as a real process: killed with SIGKILL, or stopped with SIGTERM, mid-work.

Invoices stored before a crash are delivered after the restart with the same invoice_ids, once
each after deduplication; a report abandoned on SIGTERM is resumed by the next coordinator.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.lifecycle import ReportStatus
from accounting.store.repository import ReportRecord, ReportStore
from contracts import Period, Topology
from payments.consumer import PaymentConsumer
from tests.integration.support import StaticService, eventually, record, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PERIOD = Period.month("2026-10")
ACCOUNTS = [f"acct-{n:02d}" for n in range(1, 9)]


def compute_service() -> StaticService:
    return StaticService(
        "compute", [record(account, f"vm-{account}", "vcpu", "36000", "vCPU-second") for account in ACCOUNTS]
    )


@asynccontextmanager
async def coordinator_process(
    amqp_url: str, topology: Topology, store_url: str, **settings: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RECKON_NAMESPACE": topology.namespace,
        "RECKON_STORE_URL": store_url,
        "RECKON_SERVICES": "compute",
        "RECKON_RATE_CARD": str(ROOT / "config" / "rate-card.toml"),
        "RECKON_RELAY_POLL_SECONDS": "0.2",
        "RECKON_RELAY_CLAIM_SECONDS": "5",
        "RECKON_PUBLISH_TIMEOUT_SECONDS": "1.5",
        "RECKON_RESUME_EVERY_SECONDS": "1",
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "coordinator", env=env, cwd=ROOT
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 30)


async def report_of(store: ReportStore) -> ReportRecord | None:
    return await store.latest(PERIOD.period_id)


async def reaches(store: ReportStore, status: ReportStatus) -> bool:
    report = await report_of(store)
    return report is not None and report.status is status


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ReportStore]:
    opened = await ReportStore.open(f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3")
    yield opened
    await opened.close()


def store_url(store: ReportStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


async def test_invoices_stored_before_a_sigkill_are_delivered_after_the_restart(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store: ReportStore
) -> None:
    async with serving(connection, topology, compute_service()):
        payments = await PaymentConsumer.start(connection, topology)
        async with coordinator_process(amqp_url, topology, store_url(store), relay="false") as first:
            await close_period(connection, topology, PERIOD, requested_by="test")
            await eventually(lambda: reaches(store, ReportStatus.PUBLISHING), timeout=30)
            assert (await store.outbox_counts()).pending == len(ACCOUNTS) + 1
            first.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(first.wait(), 30) == -signal.SIGKILL
        assert payments.invoices == {}

        async with coordinator_process(amqp_url, topology, store_url(store)):
            await eventually(lambda: len(payments.invoices) == len(ACCOUNTS), timeout=30)
            await eventually(lambda: reaches(store, ReportStatus.COMPLETED), timeout=30)
        await payments.stop()

    stored = await store.invoices(period_id=PERIOD.period_id)
    assert set(payments.invoices) == {invoice.invoice_id for invoice in stored}
    assert {invoice.account_id for invoice in payments.invoices.values()} == set(ACCOUNTS)
    assert (await store.outbox_counts()).pending == 0


async def test_a_kill_while_relaying_resends_only_what_was_not_confirmed_and_dedup_hides_copies(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store: ReportStore
) -> None:
    async with serving(connection, topology, compute_service()):
        payments = await PaymentConsumer.start(connection, topology)
        async with coordinator_process(amqp_url, topology, store_url(store)) as first:
            await close_period(connection, topology, PERIOD, requested_by="test")
            await eventually(lambda: len(payments.invoices) >= 1, timeout=30)
            first.send_signal(signal.SIGKILL)
            await asyncio.wait_for(first.wait(), 30)

        async with coordinator_process(amqp_url, topology, store_url(store)):
            await eventually(lambda: reaches(store, ReportStatus.COMPLETED), timeout=30)
            await eventually(lambda: len(payments.invoices) == len(ACCOUNTS), timeout=30)
        await payments.stop()

    stored = await store.invoices(period_id=PERIOD.period_id)
    assert set(payments.invoices) == {invoice.invoice_id for invoice in stored}
    assert (await store.outbox_counts()).pending == 0


async def test_sigterm_mid_gather_releases_the_report_and_the_next_coordinator_finishes_it(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store: ReportStore
) -> None:
    compute = compute_service()
    compute.delay = 5.0
    async with serving(connection, topology, compute):
        payments = await PaymentConsumer.start(connection, topology)
        async with coordinator_process(
            amqp_url, topology, store_url(store), deadline_seconds="60", shutdown_grace_seconds="0.2"
        ) as first:
            await close_period(connection, topology, PERIOD, requested_by="test")
            await eventually(lambda: bool(compute.calls), timeout=30)
            first.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.wait(), 30) == 0

        abandoned = await report_of(store)
        assert abandoned is not None
        assert (abandoned.status, abandoned.owner, abandoned.lease_until) == (
            ReportStatus.GATHERING,
            None,
            None,
        )

        compute.delay = 0
        async with coordinator_process(amqp_url, topology, store_url(store)):
            await eventually(lambda: reaches(store, ReportStatus.COMPLETED), timeout=30)
            await eventually(lambda: len(payments.invoices) == len(ACCOUNTS), timeout=30)
        await payments.stop()

    report = await report_of(store)
    assert report is not None
    history = await store.history(report.report_id)
    assert [step.status for step in history].count(ReportStatus.GATHERING) == 2
    assert any(step.reason.startswith("resumed") for step in history)
