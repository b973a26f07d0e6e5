"""How much a flood of tiny chunks to one report slows another report in flight on the same coordinator.

A service (``bench.flood_service``, a process of its own) answers one period with CHUNKS empty
chunks as fast as the broker takes them; any other period with one empty last chunk. A small
report is built alone, then again while the flooded report is being gathered. Both times are
measured from PeriodClosed accepted to the report priced (the coordinator's ``run_period``), on
the default SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from accounting.amqp.topology import delete_namespace
from accounting.runtime.app import start_coordinator
from accounting.runtime.settings import Settings, load_rate_card
from contracts import Period, PeriodClosed, Topology

ROOT = Path(__file__).resolve().parents[1]
FLOODED = Period.month("2026-01")
SERVICE = "chunky"


@dataclass(frozen=True)
class FloodResult:
    chunks: int
    alone: tuple[float, ...]
    beside: tuple[float, ...]

    @property
    def slowdown(self) -> float:
        return statistics.median(self.beside) / statistics.median(self.alone)


async def run_flood_bench(amqp_url: str, chunks: int = 100_001, rounds: int = 3) -> FloodResult:
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    others = iter(Period.month(f"2025-{month:02d}") for month in range(1, 13))
    command = [sys.executable, "-m", "bench.flood_service", amqp_url, topology.namespace, SERVICE]
    flooder = await asyncio.create_subprocess_exec(
        *command, FLOODED.period_id, str(chunks), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert flooder.stdout is not None
        if (await flooder.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the flood service did not start")
        with tempfile.TemporaryDirectory(prefix="reckon-bench-flood-") as directory:
            settings = Settings(
                amqp_url=amqp_url,
                namespace=topology.namespace,
                services=(SERVICE,),
                deadline_seconds=600,
                store_url=f"sqlite+aiosqlite:///{directory}/reckon.sqlite3",
            )
            card = load_rate_card(ROOT / "config" / "rate-card.toml")
            app = await start_coordinator(settings, card=card, consume=False)
            try:

                async def small_report() -> float:
                    started = time.perf_counter()
                    run = await app.coordinator.run_period(PeriodClosed.for_period(next(others), "bench"))
                    if run is None:
                        raise RuntimeError("the small report was refused")
                    return time.perf_counter() - started

                alone = [await small_report() for _ in range(rounds)]
                flooded = asyncio.create_task(
                    app.coordinator.run_period(PeriodClosed.for_period(FLOODED, "bench"))
                )
                try:
                    await asyncio.sleep(2)  # the flood is arriving and being stored
                    beside = [await small_report() for _ in range(rounds)]
                    if flooded.done():
                        raise RuntimeError("the flood was over before the small reports ran beside it")
                finally:
                    flooded.cancel()
                    with contextlib.suppress(BaseException):
                        await flooded
            finally:
                await app.close()
    finally:
        flooder.kill()
        await flooder.wait()
        await delete_namespace(amqp_url, topology, (SERVICE,))
    return FloodResult(chunks, tuple(alone), tuple(beside))
