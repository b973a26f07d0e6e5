"""A whole Reckon deployment in real processes, for the fault suite: compute and storage services
seeded with demo data, a coordinator (or a relay), and a payment consumer in the test process.

Faults are injected from outside, as they happen in production: a process killed with SIGKILL,
the broker closing a connection or blocking publishers, the store refusing connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.invoices import InvoiceBatch, build_invoices
from accounting.core.lifecycle import ReportStatus
from accounting.core.normalizer import Normalized, normalize
from accounting.runtime.settings import load_rate_card
from accounting.store.repository import ReportRecord, ReportStore
from contracts import InvoiceIssued, Period, Topology, UsageRecord, report_id
from payments.consumer import PaymentConsumer
from tests.integration.support import eventually
from transport.queues import wait_for_consumer
from workers.compute.seed import seed as seed_compute
from workers.compute.service import ComputeService
from workers.sdk.service import usage_stream
from workers.storage.seed import seed as seed_storage
from workers.storage.service import StorageService

ROOT = Path(__file__).resolve().parents[2]
CARD_FILE = ROOT / "config" / "rate-card.toml"
SERVICES = ("compute", "storage")
OCTOBER = Period.month("2026-10")


@dataclass
class Platform:
    amqp_url: str
    topology: Topology
    workdir: Path
    store_url: str
    period: Period
    connection: AbstractRobustConnection
    store: ReportStore
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    handled: Counter[UUID] = field(default_factory=Counter)
    """Every invoice id the payment handler ran for (after the consumer's de-duplication)."""
    payments: PaymentConsumer | None = None
    code: Path = ROOT
    """The source tree the processes run (another release's, checked out, for a rollback test)."""

    @property
    def report_id(self) -> UUID:
        return report_id(self.period.period_id, 1)

    def env(self, **settings: str) -> dict[str, str]:
        return {
            **os.environ,
            **({} if self.code == ROOT else {"PYTHONPATH": str(self.code)}),
            "AMQP_URL": self.amqp_url,
            "RECKON_NAMESPACE": self.topology.namespace,
            "RECKON_STORE_URL": self.store_url,
            "RECKON_SERVICES": ",".join(SERVICES),
            "RECKON_RATE_CARD": str(self.code / "config" / "rate-card.toml"),  # its release's card
            "RECKON_RELAY_POLL_SECONDS": "0.2",
            "RECKON_RELAY_CLAIM_SECONDS": "5",
            "RECKON_PUBLISH_TIMEOUT_SECONDS": "1.5",
            "RECKON_RESUME_EVERY_SECONDS": "0.5",
            "RECKON_LEASE_SECONDS": "3",
            "RECKON_DEADLINE_SECONDS": "120",
            **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
        }

    async def start(self, name: str, *command: str, **settings: str) -> asyncio.subprocess.Process:
        """Start (or restart) a process; its output goes to ``<name>.log`` in the work dir."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            env=self.env(**settings),
            cwd=self.code,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        return process

    async def start_worker(self, service: str, **settings: str) -> None:
        db = self.workdir / f"{service}.sqlite3"
        await self.start(service, "-m", f"workers.{service}", "serve", "--db", str(db), **settings)
        await wait_for_consumer(self.connection, self.topology.usage_queue(service).name)

    async def start_coordinator(self, **settings: str) -> None:
        await self.start("coordinator", "-m", "accounting.cli", "coordinator", **settings)
        await eventually(lambda: self.logged("coordinator", "coordinator ready"), timeout=60)

    def logged(self, name: str, text: str) -> bool:
        return text in (self.workdir / f"{name}.log").read_text(errors="replace")

    async def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 30)

    async def close_period(self) -> None:
        await close_period(self.connection, self.topology, self.period, requested_by="fault suite")

    async def report(self) -> ReportRecord | None:
        return await self.store.latest(self.period.period_id)

    async def reached(self, *statuses: ReportStatus) -> bool:
        report = await self.report()
        return report is not None and report.status in statuses

    async def until(self, *statuses: ReportStatus, timeout: float = 120) -> None:
        async def check() -> bool:
            return await self.reached(*statuses)

        await eventually(check, timeout=timeout)

    async def chunks_stored(self, service: str) -> int:
        report = await self.report()
        if report is None:
            return 0
        gather_id = await self.store.gather_of(report.report_id)
        if gather_id is None:
            return 0
        return len(await self.store.reply_bodies(report.report_id, service))

    async def issued(self, report: UUID | None = None) -> list[InvoiceIssued]:
        return await self.store.invoices(report_id=report or self.report_id)

    async def until_paid(self, invoices: list[InvoiceIssued], timeout: float = 120) -> None:
        wanted = {invoice.invoice_id for invoice in invoices}
        await eventually(lambda: wanted <= set(self.handled), timeout=timeout)


@asynccontextmanager
async def platform(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    workdir: Path,
    store_url: str,
    *,
    accounts: int = 300,
    period: Period = OCTOBER,
    code: Path = ROOT,
) -> AsyncIterator[Platform]:
    """Seeded service stores, a payment consumer counting what its handler ran for, the store."""
    seed_compute(workdir / "compute.sqlite3", period, accounts=accounts)
    seed_storage(workdir / "storage.sqlite3", period, accounts=accounts)
    store = await ReportStore.open(store_url)
    running = Platform(amqp_url, topology, workdir, store_url, period, connection, store, code=code)

    def handle(invoice: InvoiceIssued) -> None:
        running.handled[invoice.invoice_id] += 1

    running.payments = await PaymentConsumer.start(connection, topology, handle)
    try:
        yield running
    finally:
        await running.payments.stop()
        for process in running.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in running.processes.values():
            await asyncio.wait_for(process.wait(), 60)
        await store.close()


async def expected_totals(workdir: Path, period: Period) -> dict[str, str]:
    """Each account's invoice total as the in-memory reference pipeline prices the services' data."""
    card = load_rate_card(CARD_FILE)
    records: dict[str, tuple[UsageRecord, ...]] = {}
    for service in (ComputeService(workdir / "compute.sqlite3"), StorageService(workdir / "storage.sqlite3")):
        records[service.name] = tuple([record async for record in usage_stream(service.usage(period))])
    normalized = normalize(records, period, card.billable_units, card.byte_base)
    assert isinstance(normalized, Normalized)
    batch = build_invoices(
        report_id=report_id(period.period_id, 1),
        revision=1,
        period=period,
        accounts=normalized.accounts,
        usage=normalized.usage,
        card=card,
    )
    assert isinstance(batch, InvoiceBatch)
    return {invoice.account_id: str(invoice.total) for invoice in batch.invoices}


async def broker_connection_names(match: Callable[[str], bool]) -> list[str]:
    """The broker's ids (what ``close_connection`` takes) of the client connections whose listed
    properties ``match``."""
    done = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output, error = await asyncio.wait_for(done.communicate(), 120)
    assert done.returncode == 0, error.decode()
    return [line.split("\t", 1)[0] for line in output.decode().splitlines() if match(line)]


def named(name: str) -> Callable[[str], bool]:
    """Connections opened with ``client_properties={"connection_name": name}``."""
    return lambda line: f'"connection_name","{name}"' in line


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    await eventually(check, timeout=timeout)
