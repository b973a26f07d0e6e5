"""The all-in-one demo: a whole billing period end to end over the local RabbitMQ.

Sub-services run as their own processes with their own SQLite stores; the coordinator and a
payment consumer run here. Everything uses a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import UUID

from aio_pika.abc import AbstractConnection
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accounting.amqp.scheduler import close_period
from accounting.amqp.topology import delete_namespace
from accounting.cli.tables import invoice_lines_table, invoices_table, reasons_table, report_table
from accounting.core.gather import Gather
from accounting.core.lifecycle import ReportHistory, ReportStatus
from accounting.core.rate_card import RateCard
from accounting.core.report import Aborted, Completed
from accounting.runtime.app import start_coordinator
from accounting.runtime.settings import Settings
from accounting.service.coordinator import ReportRun
from accounting.store.repository import ReportStore
from contracts import InvoiceIssued, Period, Topology
from payments.consumer import PaymentConsumer
from transport.queues import wait_for_consumer

READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoResult:
    run: ReportRun
    received: tuple[InvoiceIssued, ...]
    duplicates: int

    @property
    def ok(self) -> bool:
        return (
            isinstance(self.run.outcome, Completed)
            and len(self.received) == self.run.outcome.report.invoice_count
        )


def seed_worker(service: str, db: Path, period: Period, accounts: int) -> None:
    """Fill one sub-service's own store through its own ``seed`` command."""
    command = [
        sys.executable,
        "-m",
        f"workers.{service}",
        "seed",
        "--db",
        str(db),
        "--period",
        period.period_id,
    ]
    subprocess.run([*command, "--accounts", str(accounts)], check=True, capture_output=True, text=True)


@asynccontextmanager
async def worker_processes(
    services: Sequence[str], workdir: Path, settings: Settings
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Start ``python -m workers.<service> serve`` for each service; stop them all on exit."""
    # No operations server: two workers on one machine would both want RECKON_HTTP_PORT.
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "RECKON_NAMESPACE": settings.namespace,
        "RECKON_HTTP_PORT": "",
    }
    processes = []
    try:
        for service in services:
            log = (workdir / f"{service}.log").open("wb")
            db = workdir / f"{service}.sqlite3"
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", f"workers.{service}", "serve", "--db", str(db),
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()


async def wait_for_queues(
    connection: AbstractConnection,
    topology: Topology,
    services: Sequence[str],
    processes: Sequence[asyncio.subprocess.Process],
    workdir: Path,
) -> None:
    """Wait until every sub-service consumes its queue; fail fast if one of them exits."""
    for service, process in zip(services, processes, strict=True):

        def exited(service: str = service, process: asyncio.subprocess.Process = process) -> None:
            if process.returncode is not None:
                log = (workdir / f"{service}.log").read_text(errors="replace")
                raise RuntimeError(f"sub-service {service} exited with {process.returncode}:\n{log}")

        await wait_for_consumer(connection, topology.usage_queue(service).name, READY_TIMEOUT, give_up=exited)


async def run_demo(
    settings: Settings, card: RateCard, period: Period, accounts: int, workdir: Path, console: Console
) -> DemoResult:
    services = settings.services
    with console.status("seeding the sub-services' own stores"):
        for service in services:
            seed_worker(service, workdir / f"{service}.sqlite3", period, accounts)
    console.print(f"seeded {', '.join(services)} with {accounts} accounts for {period.period_id}")

    topology = Topology(settings.namespace)
    runs: list[ReportRun] = []
    reported = asyncio.Event()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    task = progress.add_task("services answered", total=len(services))

    def on_progress(gather: Gather) -> None:
        progress.update(task, completed=gather.answered)

    def on_report(run: ReportRun) -> None:
        runs.append(run)
        reported.set()

    app = await start_coordinator(settings, card=card, on_progress=on_progress, on_report=on_report)
    try:
        async with worker_processes(services, workdir, settings) as processes:
            await wait_for_queues(app.connection, topology, services, processes, workdir)
            console.print(f"sub-services ready on namespace [bold]{topology.namespace}[/]")
            arrived = asyncio.Event()
            payments = await PaymentConsumer.start(app.connection, topology, lambda _invoice: arrived.set())
            event = await close_period(app.connection, topology, period, requested_by="reckon demo")
            console.print(
                f"scheduler: PeriodClosed {event.period_id} [{event.start:%Y-%m-%d} .. {event.end:%Y-%m-%d})"
            )
            with progress:
                await asyncio.wait_for(reported.wait(), settings.deadline_seconds + 30)
            run = runs[-1]
            if isinstance(run.outcome, Completed):
                expected = run.outcome.report.invoice_count
                async with asyncio.timeout(30):
                    while len(payments.invoices) < expected:
                        arrived.clear()
                        await arrived.wait()
                    await until_completed(app.store, run.key.report_id)
                history = await app.store.history(run.key.report_id)
                run = replace(run, history=ReportHistory(str(run.key.report_id), history))
            await payments.stop()
        result = DemoResult(run, tuple(payments.invoices.values()), payments.duplicates)
    finally:
        await app.close()
        await delete_namespace(settings.amqp_url, topology, services)
    show(result, console)
    return result


async def until_completed(store: ReportStore, report_id: UUID) -> None:
    """The relay marks a report completed in the store once ReportCompleted is confirmed."""
    while (record := await store.get(report_id)) is None or record.status is not ReportStatus.COMPLETED:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def show(result: DemoResult, console: Console) -> None:
    console.print(report_table(result.run))
    if isinstance(result.run.outcome, Aborted):
        console.print(reasons_table(result.run.outcome.report.reasons))
        console.print("[red]report aborted: no invoice was sent[/]")
        return
    console.print(invoices_table(result.received, title="Invoices received by the payment consumer"))
    if result.received:
        console.print(invoice_lines_table(max(result.received, key=lambda invoice: len(invoice.lines))))
    summary = result.run.outcome.report
    console.print(
        f"[green]report {summary.report_id} completed[/]: {len(result.received)} invoices received "
        f"(of {summary.invoice_count} issued, {result.duplicates} duplicates dropped), "
        f"total {summary.total} {summary.currency}"
    )


def demo_namespace() -> str:
    return f"demo-{uuid.uuid4().hex[:8]}"
