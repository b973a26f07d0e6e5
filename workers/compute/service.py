"""The compute sub-service: usage of virtual-machine instances, read from its own store."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread

from contracts import Period, UsageRecord
from workers.compute.store import ComputeStore
from workers.compute.usage import compute_usage


class ComputeService:
    """Answers usage requests for the ``compute`` service (satisfies ``workers.sdk.UsageService``)."""

    name: str = "compute"

    def __init__(self, store_path: Path) -> None:
        self.store = ComputeStore(store_path)

    async def usage(self, period: Period) -> list[UsageRecord]:
        """Every instance that ran during ``period``: vCPU-seconds and MiB-seconds, zero included."""
        events = await anyio.to_thread.run_sync(self.store.events)
        return compute_usage(events, period)
