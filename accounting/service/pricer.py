"""Normalizing and pricing a gathered report from the store, a window of accounts at a time.

Records are read back in account order, a page at a time; each window is normalized and priced
in a worker thread (the event loop keeps serving heartbeats and other reports) and its invoices
are written in one batch. Nothing is visible to the relay until ``finish_completed`` moves the
report to PUBLISHING, so a report's invoices go out all or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from uuid import UUID

import anyio
import anyio.to_process
import anyio.to_thread

from accounting.core.billing import PricedWindow, UsageRow, converter_for, price_window
from accounting.core.exact import exact_add
from accounting.core.lifecycle import ReportStatus
from accounting.core.normalizer import Converter
from accounting.core.numbering import DEFAULT_NUMBERING, Numbering
from accounting.core.rate_card import RateCard
from accounting.core.report import ReportKey, ReportOutcome, aborted, completed
from accounting.service.leases import LeaseKeeper
from accounting.store.repository import ReportStore, StagedCreditNote, StagedInvoice
from contracts import InvoiceIssued

log = logging.getLogger("reckon.pricer")

PAGE_RECORDS = 20_000
"""Records read per window: enough to amortise a query, small enough to keep memory flat."""


@dataclass
class StageTimes:
    """Where a report's build spent its time after the gather, for the log and the benchmarks.

    Reading, pricing and writing overlap (a pipeline), so the three add up to more than the stage.
    """

    read: float = 0.0
    price: float = 0.0
    store: float = 0.0
    windows: int = 0

    def __str__(self) -> str:
        return (
            f"read {self.read:.2f}s, normalize+price {self.price:.2f}s, store {self.store:.2f}s "
            f"in {self.windows} window(s)"
        )


class Pricer:
    """Moves a gathered report through NORMALIZING and PRICING to PUBLISHING (issued at once) or
    DRAFT (awaiting approval), or to ABORTED."""

    def __init__(
        self,
        store: ReportStore,
        card: RateCard,
        owner: str,
        clock: Callable[[], datetime],
        page_records: int = PAGE_RECORDS,
        processes: int = 0,
        numbering: Numbering | None = DEFAULT_NUMBERING,
        lease: LeaseKeeper | None = None,
    ) -> None:
        self._store = store
        self._lease = lease
        """The builder's lease: each stored window renews it; stopped before the last write."""
        self._card = card
        self._owner = owner
        self._clock = clock
        self._page = page_records
        self._processes = anyio.CapacityLimiter(processes) if processes > 0 else None
        self._in_flight = max(processes, 1) + 1
        self._numbering = numbering
        """How issued documents are numbered; None: the priced report waits as a draft."""

    async def run(self, key: ReportKey, gather_id: int, supersedes: UUID | None) -> ReportOutcome:
        store, owner, card = self._store, self._owner, self._card
        await self._move(key, ReportStatus.NORMALIZING, "every service answered")
        converter = converter_for(key, card)
        kinds = await store.record_units(gather_id)
        reasons = converter.problems(kinds)
        if reasons:
            failed = aborted(key, reasons)
            why = "; ".join(map(str, reasons))
            await self._finishing()
            await store.finish_aborted(key.report_id, failed.report, self._clock(), why, owner=owner)
            log.warning("report %s period %s → aborted: %s", key.report_id, key.period.period_id, why)
            return failed
        records = sum(count for *_, count in kinds)
        issued_now = self._numbering is not None
        await self._move(key, ReportStatus.PRICING, f"{records} records")
        await store.clear_staged(key.report_id, owner)
        times = StageTimes()
        invoices, credit_notes, total = await self._price_windows(
            key, gather_id, supersedes, converter, times
        )
        outcome = completed(key, card, invoices=invoices, total=total, records=records)
        credited = f", {credit_notes} credit notes" if credit_notes else ""
        summary = f"{invoices} invoices{credited}, total {outcome.report.total} {card.currency} ({times})"
        await self._finishing()
        issued = await store.finish_completed(
            key.report_id,
            outcome.report,
            self._clock(),
            summary if issued_now else f"awaits approval: {summary}",
            owner=owner,
            rate_card=card.model_dump(mode="json"),
            numbering=self._numbering,
        )
        if issued is None:
            log.info(
                "report %s period %s → draft, awaits approval: %s",
                key.report_id,
                key.period.period_id,
                summary,
            )
        else:
            numbers = ", ".join(f"{first}…{last}" for first, last in issued.ranges)
            log.info(
                "report %s period %s → publishing: %s; numbered %s",
                key.report_id,
                key.period.period_id,
                summary,
                numbers or "nothing",
            )
        return outcome

    async def _price_windows(
        self,
        key: ReportKey,
        gather_id: int,
        supersedes: UUID | None,
        converter: Converter,
        times: StageTimes,
    ) -> tuple[int, int, Decimal]:
        """Price every window and stage it; return how many invoices and credit notes, and the
        invoices' exact total.

        A pipeline: windows are read one after another and handed to the pricing workers (one
        more than there are workers, so the next one is ready when a worker frees up), and each
        priced window is written while the following ones are priced.
        """
        invoices, credit_notes, total = 0, 0, Decimal(0)
        pricing: deque[asyncio.Task[PricedWindow]] = deque()
        staging: asyncio.Task[None] | None = None
        after: str | None = ""
        try:
            while after is not None or pricing:
                while after is not None and len(pricing) < self._in_flight:
                    rows, superseded, upto = await self._read(key, gather_id, after, supersedes, times)
                    work = partial(
                        price_window, rows, superseded, key=key, card=self._card, converter=converter
                    )
                    # A report of one window is priced in a thread: a worker process would cost
                    # more to start than the window takes.
                    alone = after == "" and upto is None
                    pricing.append(asyncio.create_task(self._price(work, times, in_process=not alone)))
                    after = upto
                window = await pricing.popleft()
                if staging is not None:
                    await staging
                staging = asyncio.create_task(self._stage(key, window, times))
                times.windows += 1
                invoices += len(window.invoices)
                credit_notes += len(window.credit_notes)
                total = exact_add(total, window.total)
            if staging is not None:
                await staging
            return invoices, credit_notes, total
        finally:
            for task in (*pricing, staging):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _price(
        self, work: Callable[[], PricedWindow], times: StageTimes, *, in_process: bool
    ) -> PricedWindow:
        """Price a window off the event loop: in a worker process when there are processes to use
        (reading and writing the next windows then run beside it on another core), else a thread."""
        started = time.perf_counter()
        if self._processes is None or not in_process:
            priced = await anyio.to_thread.run_sync(work)
        else:
            priced = await anyio.to_process.run_sync(work, limiter=self._processes)
        times.price += time.perf_counter() - started
        return priced

    async def _read(
        self, key: ReportKey, gather_id: int, after: str, supersedes: UUID | None, times: StageTimes
    ) -> tuple[list[UsageRow], dict[str, InvoiceIssued], str | None]:
        """The next window's records and the superseded invoices of its accounts."""
        started = time.perf_counter()
        rows, upto = await self._store.usage_window(gather_id, after, self._page)
        # A correction: each account's current invoice, of whichever earlier revision issued it.
        superseded = (
            {}
            if supersedes is None
            else await self._store.current_invoices(
                key.period.period_id, key.revision, after=after, upto=upto
            )
        )
        times.read += time.perf_counter() - started
        return rows, superseded, upto

    async def _stage(self, key: ReportKey, window: PricedWindow, times: StageTimes) -> None:
        if not window.invoices and not window.credit_notes:
            return
        started = time.perf_counter()
        await self._store.stage_invoices(
            key.report_id,
            self._owner,
            period_id=key.period.period_id,
            revision=key.revision,
            currency=self._card.currency,
            invoices=[
                StagedInvoice(
                    invoice_id=invoice.invoice_id,
                    account_id=invoice.account_id,
                    total=str(invoice.total),
                    supersedes=invoice.supersedes,
                    body=invoice.body,
                )
                for invoice in window.invoices
            ],
            credit_notes=[
                StagedCreditNote(
                    credit_note_id=note.credit_note_id,
                    account_id=note.account_id,
                    credits=note.credits,
                    currency=note.currency,
                    total=str(note.total),
                    body=note.body,
                )
                for note in window.credit_notes
            ],
            at=self._clock(),
            renewal=None if self._lease is None else self._lease.renewal,
        )
        times.store += time.perf_counter() - started

    async def _finishing(self) -> None:
        """The next write takes the report out of the statuses a lease is held in: stop renewing
        (that write's fence still refuses it if the lease was lost)."""
        if self._lease is not None:
            await self._lease.stop()

    async def _move(self, key: ReportKey, status: ReportStatus, reason: str) -> None:
        await self._store.move(key.report_id, status, self._clock(), reason, owner=self._owner)
        log.info("report %s period %s → %s: %s", key.report_id, key.period.period_id, status, reason)
