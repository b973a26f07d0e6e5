"""The storage sub-service: its usage inventory for a period, computed from its own database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Final

from contracts import Period, UsageRecord
from workers.sdk.threads import iterate_in_thread
from workers.storage.store import StorageStore
from workers.storage.usage import stream_storage_usage

BATCH: Final = 1000
"""Records computed per trip to the worker thread."""


class StorageService:
    """Answers usage requests for volumes and buckets; satisfies ``workers.sdk.service.UsageService``.

    Emits metric ``block_storage`` (volumes) and ``object_storage`` (buckets), unit ``byte-second``,
    after each account's included allowance: the plan in effect at the period's start, so a period
    answered again later (a replay) gets the allowance it had then.
    """

    name: Final = "storage"

    def __init__(self, store_path: Path) -> None:
        self.store_path = Path(store_path)

    def is_empty(self) -> bool:
        """No size sample at all (or no database): a new volume or a wrong path."""
        if not self.store_path.is_file():
            return True
        with StorageStore(self.store_path, read_only=True) as store:
            return store.is_empty()

    def usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        """Every volume and bucket that existed during ``period``, zero usage included, streamed
        account by account in ``(account_id, resource_id)`` order.

        Raises ``FileNotFoundError`` (on the first record) if the database is missing: an empty
        answer would bill nothing.
        """
        # SQLite and the Decimal arithmetic both block, so they run off the event loop, a batch at a
        # time (the AMQP connection's heartbeats keep flowing while a large inventory is computed).
        return iterate_in_thread(self._records(period), BATCH)

    def _records(self, period: Period) -> Iterator[UsageRecord]:
        with (
            StorageStore(self.store_path, read_only=True, any_thread=True) as store,
            closing(store.account_samples(before=period.end, plans_at=period.start)) as accounts,
        ):
            yield from stream_storage_usage(accounts, period)
