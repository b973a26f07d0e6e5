"""The outbox relay: publishes stored events at broker speed, marks each sent only after its confirm.

It claims a window of rows at a time, publishes them all at once (the window bounds what is in
flight), and marks the confirmed ones sent in one statement per group as the confirms come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from uuid import UUID

from accounting.amqp.publisher import Publisher, Unroutable
from accounting.infra import metrics
from accounting.infra.supervisor import TaskHealth, supervise
from accounting.infra.traces import report_context
from accounting.store.repository import OutboxRow, ReportStore

log = logging.getLogger("reckon.relay")

_Outcome = tuple[OutboxRow, BaseException | None]

UNROUTABLE_BACKOFF = timedelta(seconds=30)
"""How long a row that nothing routes waits before the next attempt."""


class OutboxRelay:
    """At-least-once delivery of the outbox, in the order rows were written, per report.

    Relays in several coordinators share the work by claiming windows of rows. A report's own
    event (``ReportCompleted``/``ReportAborted``) is handed out only after every earlier row of its
    report was sent, so it is always last. A crash between a confirm and its ``mark_sent`` re-sends
    that row once the claim runs out: consumers drop the copy by ``message_id``. Any failure —
    the broker gone, the store locked — is logged and retried with backoff until the relay is
    stopped (``run``); it delays invoices, never stops them.

    Each row confirmed is observed in ``reckon_relay_lag_seconds`` (from its report's rows made
    ready — read once per report, not per row — to it marked sent); every line it logs about a
    report carries that report's ``report_id`` and ``trace_id``.
    """

    def __init__(
        self,
        store: ReportStore,
        publisher: Publisher,
        clock: Callable[[], datetime],
        poll_seconds: float = 1.0,
        claim_seconds: float = 30.0,
        window: int = 500,
        mark_every: int = 100,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._claim = timedelta(seconds=claim_seconds)
        self._window = window
        self._mark_every = mark_every
        self._wake = asyncio.Event()
        self.sent = 0
        self.health = TaskHealth("relay")
        self._ready_since: dict[UUID, datetime] = {}
        """When each report's rows were made ready (``reckon_relay_lag_seconds`` counts from it)."""

    def wake(self) -> None:
        """New rows were written: relay them now rather than at the next poll."""
        self._wake.set()

    async def flush(self, until: datetime | None = None) -> int:
        """Publish every row this relay can claim, stopping between windows at ``until``
        (shutdown); returns how many were confirmed."""
        confirmed = 0
        while until is None or self._clock() < until:
            rows = await self._store.claim_window(self._clock(), self._clock() + self._claim, self._window)
            if not rows:
                break
            sent = await self._relay(rows)
            confirmed += sent
            if sent == 0:
                break  # every row of the window came back unroutable: they are retried at the next poll
        return confirmed

    async def _relay(self, rows: Sequence[OutboxRow]) -> int:
        """Publish a claimed window; mark what was confirmed even when something failed."""
        claim = rows[0].claim
        renew_at = self._clock() + self._claim / 2
        pending: list[asyncio.Future[_Outcome]] = []
        for report_id, group in groupby(rows, key=lambda row: row.report_id):
            # A task copies the context it is created in: what the publisher logs about a row (a
            # retry) names its report, for one context per report rather than one per row.
            with report_context(report_id):
                pending.extend(asyncio.ensure_future(self._attempt(row)) for row in group)
        confirmed: list[OutboxRow] = []
        marked = 0
        unroutable: list[tuple[OutboxRow, BaseException]] = []
        failed: list[tuple[OutboxRow, BaseException]] = []
        try:
            for next_done in asyncio.as_completed(pending):
                row, error = await next_done
                if error is None:
                    confirmed.append(row)
                elif isinstance(error, Unroutable):
                    unroutable.append((row, error))
                else:
                    failed.append((row, error))
                if len(confirmed) - marked >= self._mark_every:
                    await self._mark(confirmed[marked:])
                    marked = len(confirmed)
                if claim is not None and self._clock() >= renew_at:
                    await self._store.extend_claim(claim, self._clock() + self._claim)
                    renew_at = self._clock() + self._claim / 2
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._mark(confirmed[marked:])
        for row, error in unroutable:
            # Nothing routes it (payments.invoices deleted?): keep it, say so, and try it again only
            # after a while, so that it does not hold up the rows behind it.
            with report_context(row.report_id):
                log.error("outbox %s of report %s not delivered: %s", row.message_id, row.report_id, error)
            await self._store.mark_failed([row], str(error), retry_at=self._clock() + UNROUTABLE_BACKOFF)
        if failed:
            first = failed[0][1]
            await self._store.mark_failed([row for row, _ in failed], f"{type(first).__name__}: {first}")
            raise first
        return len(confirmed)

    async def _attempt(self, row: OutboxRow) -> _Outcome:
        try:
            await self._publisher.publish(row)
        except Exception as error:  # any failure: the rest of the window's confirms still count
            return row, error
        return row, None

    async def _mark(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        at = self._clock()
        for report_id in await self._store.mark_sent(rows, at):
            with report_context(report_id):
                log.info("report %s completed: every event confirmed", report_id)
            metrics.report_completed()
        self.sent += len(rows)
        metrics.published([row.message_type for row in rows])
        unknown = {row.report_id for row in rows} - self._ready_since.keys()
        if unknown:
            self._ready_since.update(await self._store.ready_since(unknown))
        metrics.relayed(
            (at - since).total_seconds() for row in rows if (since := self._ready_since.get(row.report_id))
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, supervised: on start this resumes every row left unsent,
        and any failure restarts it with backoff."""
        await supervise(self.health, lambda: self._loop(stop), stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            await self.flush()
            self.health.ok()
            waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
            _, pending = await asyncio.wait(
                waiters, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
