"""The outbox relay: publishes stored events, marks each sent only after the broker confirmed it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from accounting.publisher import RETRYABLE, Publisher, Unroutable
from accounting.store.repository import ReportStore

log = logging.getLogger("reckon.relay")


class OutboxRelay:
    """At-least-once delivery of the outbox, in the order rows were written.

    Relays in several coordinators share the work by claiming whole reports' rows. A crash
    between a confirm and its ``mark_sent`` re-sends that row once the claim runs out:
    consumers drop the copy by ``message_id``. Connection loss is retried with exponential
    backoff, forever, until the relay is stopped.
    """

    def __init__(
        self,
        store: ReportStore,
        publisher: Publisher,
        clock: Callable[[], datetime],
        poll_seconds: float = 1.0,
        claim_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._claim = timedelta(seconds=claim_seconds)
        self._wake = asyncio.Event()
        self.sent = 0

    def wake(self) -> None:
        """New rows were written: relay them now rather than at the next poll."""
        self._wake.set()

    async def flush(self, until: datetime | None = None) -> int:
        """Publish every row this relay can claim, stopping between rows at ``until`` (shutdown);
        returns how many were confirmed."""
        confirmed = 0
        while rows := await self._store.claim_pending(self._clock(), self._clock() + self._claim):
            renew_at = self._clock() + self._claim / 2
            for position, row in enumerate(rows):
                if until is not None and self._clock() >= until:
                    await self._store.release_claims(rows[position:])
                    return confirmed
                if row.claim is not None and self._clock() >= renew_at:
                    await self._store.extend_claim(row.claim, self._clock() + self._claim)
                    renew_at = self._clock() + self._claim / 2
                try:
                    await self._publisher.publish(row)
                except RETRYABLE:
                    await self._store.release_claims(rows[position:])
                    raise
                except Unroutable as error:
                    # Nothing routes it (payments.invoices deleted?): keep it, say so, try later.
                    await self._store.mark_failed(row, str(error))
                    await self._store.release_claims(rows[position + 1 :])
                    log.error("outbox %s not delivered: %s", row.message_id, error)
                    return confirmed
                if await self._store.mark_sent(row, self._clock()):
                    log.info("report %s completed: every event confirmed", row.report_id)
                confirmed += 1
                self.sent += 1
        return confirmed

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; on start this resumes every row left unsent."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_exponential(multiplier=0.5, max=30),
            before_sleep=lambda state: log.warning(
                "relay: broker unavailable (%s); retrying",
                state.outcome.exception() if state.outcome else "?",
            ),
        ):
            with attempt:
                while not stop.is_set():
                    self._wake.clear()
                    await self.flush()
                    waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
                    _, pending = await asyncio.wait(
                        waiters, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in pending:
                        task.cancel()
