"""Which periods already have a report: the seam where a durable store plugs in."""

from __future__ import annotations

from typing import Protocol


class ReportLedger(Protocol):
    def claim(self, period_id: str) -> int | None:
        """The revision to build for a new period, or None when the period already has a report."""
        ...

    def release(self, period_id: str) -> None:
        """Forget a claim whose report could not be finished, so a redelivered event retries it."""
        ...


class InMemoryLedger:
    """One report per period for the life of this process.

    A restart forgets; a durable store (SQL, with a unique constraint on the period) replaces it.
    """

    def __init__(self) -> None:
        self._claimed: set[str] = set()

    def claim(self, period_id: str) -> int | None:
        if period_id in self._claimed:
            return None
        self._claimed.add(period_id)
        return 1

    def release(self, period_id: str) -> None:
        self._claimed.discard(period_id)
