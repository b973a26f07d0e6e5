"""The network sub-service: egress per interface, read from its own store (``workers.network.usage``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Final

from contracts import Period, UsageRecord
from workers.network.store import NetworkStore
from workers.network.usage import stream_network_usage
from workers.sdk.threads import iterate_in_thread

BATCH: Final = 1000
"""Records computed per trip to the worker thread."""


class NetworkService:
    """Answers usage requests for the ``network`` service (satisfies ``workers.sdk.UsageService``).

    Emits metric ``egress`` in unit ``byte`` per interface, after each account's included allowance
    (its plan in effect at the period's start), which the coordinator prices with the rate card's
    ``egress`` item (``GB``).
    """

    name: Final = "network"

    def __init__(self, store_path: Path) -> None:
        self.store = NetworkStore(store_path)

    def is_empty(self) -> bool:
        """No reading at all: a new volume or a wrong path (``workers.sdk.empty``)."""
        return self.store.is_empty()

    def usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        """Every interface read during ``period``, zero egress included, streamed account by account
        in ``(account_id, resource_id)`` order.

        Reading SQLite blocks, so it runs in a worker thread, a batch at a time; one account's
        readings and one batch of records are held at once.
        """
        return iterate_in_thread(self._records(period), BATCH)

    def _records(self, period: Period) -> Iterator[UsageRecord]:
        with closing(self.store.account_interfaces(period.start, period.end)) as accounts:
            yield from stream_network_usage(accounts, period)
