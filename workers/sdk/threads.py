"""Stream a blocking iterator (SQLite reads, Decimal maths) from a worker thread, a batch at a time."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterator
from itertools import islice
from typing import Generic, TypeVar

import anyio.to_thread

T = TypeVar("T")

DEFAULT_BATCH = 1000


async def iterate_in_thread(items: Iterator[T], batch_size: int = DEFAULT_BATCH) -> AsyncGenerator[T, None]:
    """Yield ``items``, advancing it in a worker thread ``batch_size`` items at a time.

    The event loop stays free while a batch is produced, and at most one batch is held here. Pass a
    generator object: it runs only in worker threads (never two at once), so it may own a sqlite3
    connection opened with ``check_same_thread=False``. Closing this async iterator, or cancelling
    the task iterating it, closes ``items`` (its ``finally`` blocks run, in a worker thread) once
    the batch in progress has finished.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    source = _Serialized(items)
    try:
        while True:
            batch = await anyio.to_thread.run_sync(source.take, batch_size)
            for item in batch:
                yield item
            if len(batch) < batch_size:
                return
    finally:
        # A cancelled ``run_sync`` returns at once while its thread finishes the batch; ``close``
        # waits for that batch (the lock) before it closes the iterator.
        await anyio.to_thread.run_sync(source.close)


class _Serialized(Generic[T]):
    """An iterator advanced and closed under one lock, from whichever thread calls."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._lock = threading.Lock()
        self._closed = False

    def take(self, count: int) -> list[T]:
        with self._lock:
            return [] if self._closed else list(islice(self._items, count))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
