"""Holding a report's lease while it is built: renewed in the background, lost loudly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self
from uuid import UUID

from accounting.store.reports import ACTIVE
from accounting.store.repository import ReportStore

log = logging.getLogger("reckon.lease")


class LeaseKeeper:
    """Keeps ``owner``'s lease on a report renewed while the block runs, until ``stop``.

    The lease is what stops another coordinator from taking the report over as abandoned, however
    long it takes to gather, price and store. Two things renew it:

    - the builder's own long writes (a batch of chunks, a window of invoices), as the last
      statement of their transaction, given ``renewal``: the keeper's separate renewal could not
      commit while such a write holds the row (PostgreSQL) or the database (SQLite), so a write
      longer than the lease would otherwise commit with the lease already run out;
    - the keeper, a third of ``lease`` after the last renewal of either kind (while the gather
      waits for replies, say), in a short transaction of its own.

    The builder calls ``stop`` before the write that finishes the report, so no tick lands inside
    or after it. If a renewal still finds the lease gone, the keeper looks at the report:
    finished is not an error (debug); held by another coordinator is an error naming it, and the
    builder's next write is refused by the store's fence (``LeaseLost``). A renewal that fails
    because the store is briefly unreachable is retried at the next tick.
    """

    def __init__(
        self,
        store: ReportStore,
        report_id: UUID,
        owner: str,
        lease: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._report_id = report_id
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._renewed = time.monotonic()
        self.lost = False
        self.renewals = {"keeper": 0, "write": 0}
        """How often each kind of renewal ran (what the lease tests measure)."""

    def until(self) -> datetime:
        """When a lease taken or renewed now runs out."""
        return self._clock() + self._lease

    def renewal(self) -> datetime:
        """``until()`` for a write of the builder's that renews the lease as it commits: the
        keeper's next tick is counted from now."""
        self._renewed = time.monotonic()
        self.renewals["write"] += 1
        return self.until()

    async def stop(self) -> None:
        """No more renewals: the builder is about to finish the report (or has)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._renew(), name=f"lease {self._report_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _renew(self) -> None:
        interval = self._lease.total_seconds() / 3
        while True:
            due = self._renewed + interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                continue
            self._renewed = time.monotonic()
            self.renewals["keeper"] += 1
            try:
                held = await self._store.renew_lease(self._report_id, self._owner, self.until())
            except Exception as error:  # the store is briefly unreachable: try again next tick
                log.warning("report %s: could not renew its lease (%s); retrying", self._report_id, error)
                continue
            if not held:
                await self._not_renewed()
                return

    async def _not_renewed(self) -> None:
        """Say truthfully why a renewal matched nothing: the report was finished (its last write
        can land between two ticks: not an error), or another coordinator holds it now (``lost``)."""
        try:
            record = await self._store.get(self._report_id)
        except Exception as error:  # cannot tell: the fence still stops the next write
            record = None
            log.warning(
                "report %s: lease not renewed and the report could not be read (%s)", self._report_id, error
            )
        if record is not None and record.owner is not None and record.owner != self._owner:
            self.lost = True
            log.error(
                "report %s: lease lost: coordinator %s holds it now (until %s, status %s); this "
                "coordinator stops writing to it",
                self._report_id,
                record.owner,
                record.lease_until.isoformat() if record.lease_until else "?",
                record.status.value,
            )
            return
        if record is not None and record.status in ACTIVE and record.owner is None:
            self.lost = True
            log.warning(
                "report %s: lease released while it was being built; this builder stops", self._report_id
            )
            return
        status = record.status.value if record is not None else "gone"
        log.debug("report %s: no lease to renew, the report is %s", self._report_id, status)
