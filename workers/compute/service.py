"""The compute sub-service: usage of virtual-machine instances, read from its own store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Final

from contracts import Period, UsageRecord
from workers.compute.store import ComputeStore
from workers.compute.usage import stream_compute_usage
from workers.sdk.threads import iterate_in_thread

BATCH: Final = 1000
"""Records computed per trip to the worker thread."""


class ComputeService:
    """Answers usage requests for the ``compute`` service (satisfies ``workers.sdk.UsageService``)."""

    name: str = "compute"

    def __init__(self, store_path: Path) -> None:
        self.store = ComputeStore(store_path)

    def is_empty(self) -> bool:
        """No instance event at all: a new volume or a wrong path (``workers.sdk.empty``)."""
        return self.store.is_empty()

    def usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        """Every instance that ran during ``period``: vCPU-seconds and MiB-seconds, zero included,
        streamed instance by instance in ``instance_id`` order.

        Reading SQLite and the Decimal arithmetic block, so they run in a worker thread, a batch at
        a time; only one instance's events and one batch of records are held at once.
        """
        return iterate_in_thread(self._records(period), BATCH)

    def _records(self, period: Period) -> Iterator[UsageRecord]:
        with closing(self.store.iter_events()) as events:
            yield from stream_compute_usage(events, period)
