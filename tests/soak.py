"""``make test-soak``: a thousand reports back to back on a deployment in real processes, with a
random fault injected into most of them, then the fault suite's summary line and the coordinator's
peak memory. Not part of ``make test`` (it takes a while).

    python -m tests.soak --reports 1000 [--accounts 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika

from accounting.amqp.topology import delete_namespace
from accounting.core.lifecycle import ReportStatus
from bench.memory import peak_rss_mb
from contracts import Period, Topology
from tests.e2e.platform import Platform, broker_connection_names, named, platform
from tests.faults import LEDGER
from transport.redact import DEFAULT_AMQP_URL

FAULTS = ("none", "kill coordinator", "kill storage", "kill compute", "close coordinator connection")


def periods(count: int) -> list[Period]:
    """``count`` distinct months from January 1901 on (one report each), all long over: the
    billing calendar refuses a month that has not ended."""
    return [Period.month(f"{1901 + n // 12:04d}-{n % 12 + 1:02d}") for n in range(count)]


async def inject(running: Platform, fault: str, namespace: str) -> None:
    if fault == "kill coordinator":
        await running.kill("coordinator")
        await running.start_coordinator()
    elif fault in ("kill storage", "kill compute"):
        service = fault.split()[1]
        await running.kill(service)
        await running.start_worker(service)
    elif fault == "close coordinator connection":
        for name in await broker_connection_names(named(f"reckon coordinator {namespace}")):
            process = await asyncio.create_subprocess_exec(
                "rabbitmqctl", "close_connection", name, "soak", stdout=asyncio.subprocess.DEVNULL
            )
            await process.wait()


async def one_report(
    running: Platform, period: Period, fault: str, namespace: str, rng: random.Random
) -> str:
    """Close ``period``, inject ``fault`` at a random moment, wait for the report's end (replaying it
    once if it aborted), and record what the payment side received."""
    running.period = period
    await running.close_period()
    await asyncio.sleep(rng.uniform(0, 1.5))
    if fault != "none":
        await inject(running, fault, namespace)
    await running.until(ReportStatus.COMPLETED, ReportStatus.ABORTED, timeout=300)
    report = await running.report()
    assert report is not None
    if report.status is ReportStatus.ABORTED:
        LEDGER.record(f"{fault} ({period.period_id})", aborted=1)
        return "aborted"
    invoices = await running.issued(report.report_id)
    await running.until_paid(invoices, timeout=300)
    issued = {invoice.invoice_id for invoice in invoices}
    handled = [invoice_id for invoice_id in running.handled.elements() if invoice_id in issued]
    LEDGER.record(f"{fault} ({period.period_id})", completed=1, issued=issued, handled=handled)
    return "completed"


def coordinator_peak(running: Platform) -> float:
    coordinator = running.processes.get("coordinator")
    return 0.0 if coordinator is None or coordinator.returncode is not None else peak_rss_mb(coordinator.pid)


async def soak(reports: int, accounts: int, seed: int, amqp_url: str) -> None:
    rng = random.Random(seed)
    topology = Topology(f"soak-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect_robust(amqp_url)
    peak = 0.0
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="reckon-soak-") as directory:
            workdir = Path(directory)
            url = f"sqlite+aiosqlite:///{workdir}/reckon.sqlite3"
            months = periods(reports)
            async with platform(
                amqp_url, connection, topology, workdir, url, accounts=accounts, period=months[0]
            ) as running:
                # The services' data were seeded around the first month; later months bill what of it
                # overlaps them (often nothing but the instances still running): a real period each.
                await running.start_worker("compute")
                await running.start_worker("storage")
                await running.start_coordinator()
                for number, period in enumerate(months, start=1):
                    fault = rng.choice(FAULTS)
                    peak = max(peak, coordinator_peak(running))  # before a kill takes it with it
                    outcome = await one_report(running, period, fault, topology.namespace, rng)
                    peak = max(peak, coordinator_peak(running))
                    if number % 50 == 0 or number == reports:
                        print(
                            f"{datetime.now(UTC):%H:%M:%S} {number}/{reports} reports ({outcome} last, "
                            f"{time.monotonic() - started:.0f}s)",
                            flush=True,
                        )
    finally:
        await connection.close()
        await delete_namespace(amqp_url, topology, ("compute", "storage"))
    print(LEDGER.summary() + f", coordinator peak RSS {peak:.0f} MB")
    if LEDGER.lost or LEDGER.duplicates:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    asyncio.run(soak(arguments.reports, arguments.accounts, arguments.seed, amqp_url))


if __name__ == "__main__":
    main()
