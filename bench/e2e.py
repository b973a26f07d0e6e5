"""End to end at scale: the real compute and storage services seeded with N accounts, a coordinator
process, ``PeriodClosed`` → report COMPLETED with every invoice confirmed by the broker.

Each process runs on its own, as in production; the time of each stage comes from the report's
stored history, the peak RSS of each process from ``/proc/<pid>/status`` (``VmHWM``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.amqp.scheduler import close_period
from accounting.amqp.topology import delete_namespace
from accounting.core.lifecycle import ReportStatus
from accounting.store.repository import ReportStore
from bench.floor import Floor, measure_answers, measure_publish
from bench.memory import TreePeak, peak_rss_mb, sampling
from contracts import Period, Topology, report_id
from transport.queues import wait_for_consumer

PERIOD = Period.month("2026-07")  # over: the billing calendar refuses a month that is not
ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "var" / "bench"
SERVICES = ("compute", "storage")
TIMEOUT = 900.0
"""Seconds a run (and its gather's deadline) may take, at least: a million accounts take longer."""


def timeout_for(accounts: int) -> float:
    return max(TIMEOUT, accounts * 0.002)


_TIMES = re.compile(r"read (?P<read>[\d.]+)s, normalize\+price (?P<price>[\d.]+)s, store (?P<store>[\d.]+)s")


@dataclass
class EndToEnd:
    accounts: int
    backend: str
    approval: str = "auto"
    records: int = 0
    invoices: int = 0
    total_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    """Each process's own peak; ``coordinator tree`` is the largest sum of the coordinator's and
    its pricing processes' resident sets at one instant (what a container's limit sees)."""
    status: str = ""
    floor: Floor | None = None

    @property
    def over_floor(self) -> float | None:
        if self.floor is None or not self.floor.seconds or not self.total_seconds:
            return None
        return self.total_seconds / self.floor.seconds


def seeded(service: str, accounts: int) -> Path:
    """The service's own store seeded with ``accounts`` accounts (kept in var/bench between runs)."""
    SEEDS.mkdir(parents=True, exist_ok=True)
    db = SEEDS / f"{service}-{PERIOD.period_id}-{accounts}.sqlite3"
    if not db.exists():
        partial = db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        command = [sys.executable, "-m", f"workers.{service}", "seed", "--period", PERIOD.period_id]
        command += ["--db", str(partial), "--accounts", str(accounts)]
        subprocess.run(command, check=True, capture_output=True)
        partial.rename(db)
    return db


@asynccontextmanager
async def store_url(backend: str, workdir: Path, postgres: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir}/reckon.sqlite3"
        return
    name = f"reckon_bench_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(postgres, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield postgres.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def spawn(env: dict[str, str], log: Path, *command: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT
    )


async def until_ready(log: Path, process: asyncio.subprocess.Process, marker: str) -> None:
    async with asyncio.timeout(60):
        while marker not in (text := await asyncio.to_thread(log.read_text, errors="replace")):
            if process.returncode is not None:
                raise RuntimeError(f"{log.name} exited: {text[-2000:]}")
            await asyncio.sleep(0.2)


async def run_end_to_end(
    accounts: int,
    backend: str,
    amqp_url: str,
    postgres: str,
    profile: Path | None = None,
    approval: str = "auto",
) -> EndToEnd:
    """With ``approval = "manual"`` the report stops as a draft; ``reckon reports approve`` is then
    run at once, as an operator would, and its own wall time is the ``approve`` stage (the time
    the report waited for it is left out of the total)."""
    result = EndToEnd(accounts, backend, approval)
    dbs = {service: seeded(service, accounts) for service in SERVICES}
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory(prefix="reckon-bench-") as directory:
        workdir = Path(directory)
        async with store_url(backend, workdir, postgres) as url:
            env = {
                **os.environ,
                "AMQP_URL": amqp_url,
                "RECKON_NAMESPACE": topology.namespace,
                "RECKON_SERVICES": ",".join(SERVICES),
                "RECKON_STORE_URL": url,
                "RECKON_DEADLINE_SECONDS": str(int(timeout_for(accounts))),
                "RECKON_RATE_CARD": str(ROOT / "config" / "rate-card.toml"),
                "RECKON_APPROVAL": approval,
            }
            connection = await aio_pika.connect_robust(amqp_url)
            processes: dict[str, asyncio.subprocess.Process] = {}
            spy: asyncio.subprocess.Process | None = None
            try:
                for service in SERVICES:
                    processes[service] = await spawn(
                        env, workdir / f"{service}.log",
                        sys.executable, "-m", f"workers.{service}", "serve", "--db", str(dbs[service]),
                    )  # fmt: skip
                    await wait_for_consumer(connection, topology.usage_queue(service).name)
                coordinator_log = workdir / "coordinator.log"
                processes["coordinator"] = await spawn(
                    env, coordinator_log, sys.executable, "-m", "accounting.cli", "coordinator"
                )
                await until_ready(coordinator_log, processes["coordinator"], "coordinator ready")
                if profile is not None:
                    spy = await spawn(
                        env, workdir / "py-spy.log",
                        "py-spy", "record", "--pid", str(processes["coordinator"].pid), "--rate", "50",
                        "--format", "speedscope", "--output", str(profile), "--nonblocking",
                    )  # fmt: skip
                tree = TreePeak(processes["coordinator"].pid)
                started = time.perf_counter()
                give_up_at = started + timeout_for(accounts)
                await close_period(connection, topology, PERIOD, requested_by="bench")
                store = await ReportStore.open(url, migrate=False)
                try:
                    async with sampling(tree):
                        if approval == "manual":
                            result.status = await until_finished(
                                store,
                                give_up_at,
                                (ReportStatus.DRAFT, ReportStatus.ABORTED),
                            )
                            drafted = time.perf_counter()
                            await approve(env)
                            result.stages["approve"] = time.perf_counter() - drafted
                        result.status = await until_finished(store, give_up_at)
                        result.total_seconds = time.perf_counter() - started
                    await describe(store, result)
                finally:
                    await store.close()
                result.peak_rss_mb = {name: peak_rss_mb(process.pid) for name, process in processes.items()}
                result.peak_rss_mb["coordinator tree"] = tree.mb
                # The floor, with the same service processes, now warm as they were for the run.
                result.floor = Floor(await measure_answers(amqp_url, topology, SERVICES, PERIOD))
                result.floor.invoices = result.invoices
                result.floor.publish_seconds = await measure_publish(amqp_url, result.invoices)
            finally:
                if spy is not None:
                    spy.send_signal(2)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(spy.wait(), 60)
                for process in processes.values():
                    if process.returncode is None:
                        process.terminate()
                for process in processes.values():
                    await process.wait()
                await connection.close()
                await delete_namespace(amqp_url, topology, SERVICES)
    return result


async def approve(env: dict[str, str]) -> None:
    """``reckon reports approve`` as its own process, as an operator runs it."""
    command = [
        sys.executable,
        "-m",
        "accounting.cli",
        "reports",
        "approve",
        PERIOD.period_id,
        "--by",
        "bench",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"reckon reports approve failed: {output.decode(errors='replace')}")


async def until_finished(
    store: ReportStore,
    give_up_at: float,
    statuses: tuple[ReportStatus, ...] = (ReportStatus.COMPLETED, ReportStatus.ABORTED),
) -> str:
    wanted = report_id(PERIOD.period_id, 1)
    while time.perf_counter() < give_up_at:
        record = await store.get(wanted)
        if record is not None and record.status in statuses:
            return record.status.value
        await asyncio.sleep(0.1)
    return "timed out"


async def describe(store: ReportStore, result: EndToEnd) -> None:
    """Stage times from the report's history (each transition's time and reason)."""
    wanted = report_id(PERIOD.period_id, 1)
    history = await store.history(wanted)
    at = {transition.status: transition.at for transition in history}
    if ReportStatus.COMPLETED not in at:
        return
    priced = ReportStatus.DRAFT if ReportStatus.DRAFT in at else ReportStatus.PUBLISHING
    result.stages["gather"] = (at[ReportStatus.NORMALIZING] - at[ReportStatus.GATHERING]).total_seconds()
    result.stages["normalize+price+store"] = (at[priced] - at[ReportStatus.NORMALIZING]).total_seconds()
    result.stages["relay"] = (at[ReportStatus.COMPLETED] - at[ReportStatus.PUBLISHING]).total_seconds()
    summary = next(t for t in history if t.status is priced).reason.removeprefix("awaits approval: ")
    found = _TIMES.search(summary)
    if found:
        result.stages.update({f"  {name}": float(found.group(name)) for name in ("read", "price", "store")})
    pricing = next(t for t in history if t.status is ReportStatus.PRICING)
    result.records = int(pricing.reason.split()[0])
    result.invoices = int(summary.split()[0])
    if priced is ReportStatus.DRAFT:  # the time the draft waited is the reviewer's, not the pipeline's
        result.total_seconds -= (at[ReportStatus.PUBLISHING] - at[ReportStatus.DRAFT]).total_seconds()
        result.total_seconds += result.stages["approve"]
