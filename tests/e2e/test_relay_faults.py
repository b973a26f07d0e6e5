"""The relay as a real process under faults: SIGKILL mid-window, a broker restart, a locked store.

Each test stores a report of 20,000 invoices ready to relay, runs ``reckon relay`` against it and
the real broker, injects the fault while it publishes, and then reads what reached the queues:
every invoice, with its own id, and ``ReportCompleted`` after all of them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import select

from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.lifecycle import ReportStatus
from accounting.store.repository import ReportStore
from accounting.store.schema import outbox
from bench.relay import PERIOD, bodies, stage
from contracts import Topology, report_id
from tests.broker import rabbitmqctl
from tests.faults import LEDGER
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INVOICES = 20_000
WINDOW = 500
REPORT = report_id(PERIOD.period_id, 1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ReportStore]:
    """A store holding one report at PUBLISHING with 20,000 invoices in its outbox."""
    opened = await ReportStore.open(f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3")
    await stage(opened, bodies(INVOICES))
    yield opened
    await opened.close()


@asynccontextmanager
async def relay_process(
    amqp_url: str, topology: Topology, store: ReportStore, log: Path, **settings: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RECKON_NAMESPACE": topology.namespace,
        "RECKON_STORE_URL": str(store.engine.url),
        "RECKON_RELAY_WINDOW": str(WINDOW),
        "RECKON_RELAY_POLL_SECONDS": "0.2",
        "RECKON_RELAY_CLAIM_SECONDS": "5",
        "RECKON_PUBLISH_TIMEOUT_SECONDS": "1.5",
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accounting.cli", "relay", env=env, cwd=ROOT, stdout=output, stderr=output
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 60)


@asynccontextmanager
async def capture(connection: AbstractRobustConnection, topology: Topology) -> AsyncIterator[str]:
    """A durable queue bound to every invoice and report event, in publish order; deleted after."""
    channel = await connection.channel()
    await declare_coordinator_topology(channel, topology)
    name = f"{topology.namespace}.capture"
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(topology.invoices.name, "#")
    await queue.bind(topology.reports.name, "#")
    try:
        yield name
    finally:
        await channel.queue_delete(name)
        await channel.close()


async def drain(connection: AbstractRobustConnection, name: str) -> list[str]:
    """Every message id in the queue, in order."""
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    found: list[str] = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
        found.append(message.message_id or "")
    await channel.close()
    return found


async def sent(store: ReportStore) -> int:
    return (await store.outbox_status()).sent


async def completed(store: ReportStore) -> bool:
    record = await store.get(REPORT)
    return record is not None and record.status is ReportStatus.COMPLETED


def check_every_invoice_then_the_report(received: list[str], scenario: str) -> Counter[str]:
    counts = Counter(received)
    issued = [invoice.invoice_id for invoice in bodies(INVOICES)]
    # What a payment service de-duplicating by invoice_id handles: each id once.
    handled = [UUID(message_id) for message_id in set(counts) if not message_id.endswith("completed")]
    LEDGER.record(scenario, completed=1, issued=issued, handled=handled)
    invoices = {str(invoice.invoice_id) for invoice in bodies(INVOICES)}
    assert set(counts) == invoices | {f"{REPORT}/report.completed"}
    assert received[-1] == f"{REPORT}/report.completed"
    assert counts[f"{REPORT}/report.completed"] == 1
    return counts


async def test_a_relay_killed_mid_window_resends_only_what_was_not_marked_sent(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    store: ReportStore,
    tmp_path: Path,
) -> None:
    log = tmp_path / "relay.log"
    async with capture(connection, topology) as name:
        async with relay_process(amqp_url, topology, store, log) as first:
            await eventually(lambda: _at_least(store, 3 * WINDOW), timeout=120)
            first.send_signal(signal.SIGKILL)
            await first.wait()
        marked_before_the_kill = await _sent_message_ids(store)
        async with relay_process(amqp_url, topology, store, log):
            await eventually(lambda: completed(store), timeout=180)
        received = await drain(connection, name)

    counts = check_every_invoice_then_the_report(received, "relay SIGKILLed mid-window")
    assert 0 < len(marked_before_the_kill) < INVOICES
    assert all(counts[message_id] == 1 for message_id in marked_before_the_kill)
    # Only rows in flight or confirmed-but-not-yet-marked when it died went out twice.
    assert sum(count - 1 for count in counts.values()) <= WINDOW


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl")
async def test_a_broker_restart_mid_relay_delays_the_invoices_and_loses_none(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    store: ReportStore,
    tmp_path: Path,
) -> None:
    log = tmp_path / "relay.log"
    async with capture(connection, topology) as name:
        async with relay_process(amqp_url, topology, store, log):
            await eventually(lambda: _at_least(store, 2 * WINDOW), timeout=120)
            try:
                await rabbitmqctl("stop_app")
                await asyncio.sleep(2)
            finally:
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup")
            await eventually(lambda: completed(store), timeout=240)
        await asyncio.wait_for(connection.connected.wait(), 60)
        received = await drain(connection, name)

    check_every_invoice_then_the_report(received, "broker restarted mid-relay")
    assert "restarting" in log.read_text(errors="replace")


async def test_a_locked_store_mid_relay_delays_the_invoices_and_loses_none(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    store: ReportStore,
    tmp_path: Path,
) -> None:
    log = tmp_path / "relay.log"
    database = str(store.engine.url.database)
    async with capture(connection, topology) as name:
        async with relay_process(amqp_url, topology, store, log, store_busy_timeout_seconds="0.5"):
            await eventually(lambda: _at_least(store, 2 * WINDOW), timeout=120)
            await asyncio.to_thread(_hold_write_lock, database, 4.0)
            await eventually(lambda: completed(store), timeout=240)
        received = await drain(connection, name)

    check_every_invoice_then_the_report(received, "store locked mid-relay")
    text = log.read_text(errors="replace")
    assert "database is locked" in text
    assert "restarting" in text


def _hold_write_lock(database: str, seconds: float) -> None:
    """Another process's long write transaction on the SQLite file."""
    blocker = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        blocker.execute("COMMIT")
    finally:
        blocker.close()


async def _at_least(store: ReportStore, count: int) -> bool:
    return await sent(store) >= count


async def _sent_message_ids(store: ReportStore) -> set[str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(outbox.c.message_id).where(outbox.c.sent_at.is_not(None)))
        return {row.message_id for row in rows}
