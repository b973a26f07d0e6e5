"""The storage sub-service: its usage inventory for a period, computed from its own database."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import anyio.to_thread

from contracts import Period, UsageRecord
from workers.storage.store import StorageStore
from workers.storage.usage import storage_usage


class StorageService:
    """Answers usage requests for volumes and buckets; satisfies ``workers.sdk.service.UsageService``.

    Emits metric ``block_storage`` (volumes) and ``object_storage`` (buckets), unit ``byte-second``,
    after each account's included allowance.
    """

    name: Final = "storage"

    def __init__(self, store_path: Path) -> None:
        self.store_path = Path(store_path)

    async def usage(self, period: Period) -> list[UsageRecord]:
        """Every volume and bucket that existed during ``period``, zero usage included.

        Raises ``FileNotFoundError`` if the database is missing: an empty answer would bill nothing.
        """
        # SQLite and the Decimal arithmetic both block, so they run off the event loop (the AMQP
        # connection's heartbeats keep flowing while a large inventory is computed).
        return await anyio.to_thread.run_sync(self._usage, period)

    def _usage(self, period: Period) -> list[UsageRecord]:
        with StorageStore(self.store_path, read_only=True) as store:
            samples = store.samples(before=period.end)
            subscriptions = store.subscriptions()
        return storage_usage(samples, subscriptions, period)
