"""The accounting coordinator: one stored report per period, built from the services' replies.

The gather machine, normalizer and pricing are the pure core; this module moves a stored report
through its lifecycle while holding its lease. Replies are stored as they arrive (the gatherer and
its sink), the report is priced from the store (``Pricer``), and its invoices and events reach the
outbox with the transition that publishes them. The relay (``accounting/service/relay.py``) sends them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import aio_pika
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from accounting.amqp.gatherer import ProgressCallback, UsageGatherer
from accounting.core.calendar import UTC_MONTHS, BillingCalendar
from accounting.core.gather import Gather
from accounting.core.gather_answers import ServiceOutcome, ServiceState
from accounting.core.lifecycle import ReportHistory, ReportStatus
from accounting.core.numbering import DEFAULT_NUMBERING, Numbering
from accounting.core.rate_card import RateCard
from accounting.core.report import Aborted, ReportKey, ReportOutcome, aborted
from accounting.infra import metrics
from accounting.infra.clock import Clock, utc_now
from accounting.infra.traces import report_context, report_trace
from accounting.service.gather_sink import StoreSink
from accounting.service.leases import LeaseKeeper
from accounting.service.pricer import Pricer
from accounting.store.repository import (
    ACTIVE,
    NOT_ASKED,
    LeaseLost,
    PeriodRefusal,
    ReportExists,
    ReportRecord,
    ReportStore,
    StoredReply,
)
from contracts import AbortCode, AbortReason, PeriodClosed, report_id
from observability import logs, tracing

log = logging.getLogger("reckon.coordinator")

DEFAULT_LEASE = timedelta(seconds=60)
RETRY_BACKOFF = timedelta(seconds=5)
MAX_RETRY_BACKOFF = timedelta(minutes=5)
"""How long a report stays with its builder without a renewal (renewed every third of it)."""


@dataclass(frozen=True)
class ReportRun:
    """What one build of a report produced, for the CLI and for tests."""

    key: ReportKey
    outcome: ReportOutcome
    history: ReportHistory
    gather: Gather
    """The finished gather; its ``ignored`` counts keep growing as late replies arrive."""
    replies: Mapping[str, StoredReply] = field(default_factory=dict)
    """Every service's stored outcome, carried-over answers of a replay included."""

    @property
    def records(self) -> dict[str, int]:
        """Records used per service, asked or carried over."""
        return {service: reply.records for service, reply in self.replies.items()}

    @property
    def carried(self) -> dict[str, StoredReply]:
        """Services not asked again in a replay: their stored good answers were used."""
        return {service: reply for service, reply in self.replies.items() if reply.carried_from is not None}


class PeriodRefused(Exception):
    """The billing calendar refused a PeriodClosed (the reason is stored and in the message)."""


class Coordinator:
    """Builds reports: PENDING → GATHERING → NORMALIZING → PRICING → PUBLISHING (→ COMPLETED by
    the relay), or → DRAFT (awaiting approval, ``approval = "manual"``), or ABORTED, every
    transition stored with its reason and logged with the report id.
    """

    def __init__(
        self,
        *,
        services: Sequence[str],
        deadline: timedelta,
        card: RateCard,
        gatherer: UsageGatherer,
        store: ReportStore,
        owner: str,
        clock: Clock = utc_now,
        lease: timedelta = DEFAULT_LEASE,
        pricing_processes: int = 0,
        pricing_page_records: int = 20_000,
        max_build_attempts: int = 3,
        on_progress: ProgressCallback | None = None,
        on_report: Callable[[ReportRun], None] | None = None,
        on_stored: Callable[[], None] | None = None,
        calendar: BillingCalendar = UTC_MONTHS,
        previews: bool = False,
        numbering: Numbering = DEFAULT_NUMBERING,
        approval: Literal["auto", "manual"] = "auto",
    ) -> None:
        self.services = tuple(services)
        self.calendar = calendar
        """Which periods exist and when each may be closed."""
        self.previews = previews
        """Builds previews (in the preview store): their invoices get ids and numbers no issued
        one has, and are never drafts."""
        self.numbering = numbering.for_preview() if previews else numbering
        self.approval = "auto" if previews else approval
        """``manual``: a priced report waits as a DRAFT until ``reckon reports approve``."""
        self.deadline = deadline
        self.card = card
        self.store = store
        self.owner = owner
        self.lease = lease
        self._pricing_processes = pricing_processes
        self._pricing_page = pricing_page_records
        self.max_build_attempts = max_build_attempts
        self._gatherer = gatherer
        self._clock = clock
        self._on_progress = on_progress
        self._on_report = on_report
        self._on_stored = on_stored
        self.building: dict[UUID, asyncio.Task[ReportRun]] = {}
        """Reports this instance is building, by report id (for a graceful shutdown)."""

    async def accept(self, event: PeriodClosed) -> ReportRecord | None:
        """Commit revision 1 of the period's report; None when the period already has a report.

        ``PeriodRefused`` (and the refusal stored) when the billing calendar refuses the period:
        it has not ended, or its bounds are not the calendar's for its id. No report is made, so
        the real close of that period is never blocked."""
        period = event.period
        refusal = self.calendar.refusal(period, self._clock())
        if refusal is not None:
            await self.store.record_refusal(PeriodRefusal(period, event.requested_by, refusal, self._clock()))
            log.error("PeriodClosed from %s refused: %s", event.requested_by, refusal)
            raise PeriodRefused(refusal)
        try:
            return await self.store.create_report(
                report_id=report_id(period.period_id, 1),
                period=period,
                revision=1,
                services=self.services,
                requested=self.services,
                at=self._clock(),
                reason=f"PeriodClosed from {event.requested_by}",
                owner=self.owner,
                lease_until=self._clock() + self.lease,
                rate_card=self.card.model_dump(mode="json"),
            )
        except ReportExists:
            with report_context(report_id(period.period_id, 1), period_id=period.period_id):
                log.info(
                    "period %s already has a report; event from %s ignored",
                    period.period_id,
                    event.requested_by,
                )
            return None

    async def run_period(self, event: PeriodClosed) -> ReportRun | None:
        """Accept and build in one call (the CLI and tests); None when the period has a report."""
        record = await self.accept(event)
        return None if record is None else await self.build(record)

    def start_building(self, record: ReportRecord) -> asyncio.Task[ReportRun]:
        task = asyncio.create_task(self.build(record), name=f"report {record.report_id}")
        self.building[record.report_id] = task
        task.add_done_callback(lambda _task: self.building.pop(record.report_id, None))
        task.add_done_callback(lambda done: _log_failure(done, record))
        return task

    async def resume_abandoned(self) -> list[asyncio.Task[ReportRun]]:
        """Take over reports whose builder stopped or died, and build them again from the gather."""
        return [self.start_building(record) for record in await self.claim_abandoned()]

    async def claim_abandoned(self, period_id: str | None = None) -> list[ReportRecord]:
        now = self._clock()
        claimed = await self.store.claim_abandoned(
            self.owner, now, now + self.lease, period_id, exclude=set(self.building)
        )
        for record in claimed:
            with report_context(record.report_id, period_id=record.period.period_id):
                log.warning(
                    "report %s period %s: resuming an abandoned report",
                    record.report_id,
                    record.period.period_id,
                )
        return claimed

    async def build(self, record: ReportRecord) -> ReportRun:
        """Build the report while holding its lease (renewed until the build ends).

        A report is never resumed into the same failure forever: an error worth retrying (the
        store or the broker briefly gone) leaves the report to be built again after a backoff, at
        most ``max_build_attempts`` builds in all; any other error, or the last attempt's, aborts it
        as ``internal``, naming the error. A lost lease just stops this builder.

        Everything it logs carries the report id and the period id as fields (and the trace id:
        the report's trace, continued from PeriodClosed's ``traceparent`` when the build started
        from one). Lines about a report logged outside a build do too (``report_context``).
        """
        trace = report_trace(record.report_id, tracing.current())
        with tracing.traced(trace), logs.bound(report_id=record.report_id, period_id=record.period.period_id):
            run = await self._build_report(record)
        metrics.report_built(run.outcome)
        return run

    async def _build_report(self, record: ReportRecord) -> ReportRun:
        key = ReportKey(record.report_id, record.revision, record.period, preview=self.previews)
        try:
            async with LeaseKeeper(self.store, key.report_id, self.owner, self.lease, self._clock) as lease:
                if record.build_attempts >= self.max_build_attempts:
                    gather = Gather(dict.fromkeys(record.requested, ""), self._clock())
                    outcome: ReportOutcome = await self._give_up(record, key)
                else:
                    gather, outcome = await self._build(record, key, lease)
        except LeaseLost:
            log.warning("report %s: lease lost; its new owner builds it", key.report_id)
            raise
        except Exception as error:
            await self._after_failure(key, error)
            raise
        if self._on_stored is not None:
            self._on_stored()
        if gather.ignored:
            log.info("report %s: ignored replies %s", key.report_id, dict(gather.ignored))
        run = ReportRun(
            key,
            outcome,
            ReportHistory(str(key.report_id), await self.store.history(key.report_id)),
            gather,
            await self.store.replies(key.report_id),
        )
        if self._on_report is not None:
            self._on_report(run)
        return run

    async def _build(
        self, record: ReportRecord, key: ReportKey, lease: LeaseKeeper
    ) -> tuple[Gather, ReportOutcome]:
        store, owner = self.store, self.owner
        carried = tuple(service for service in record.services if service not in record.requested)
        deadline = self._clock() + self.deadline
        resumed = record.status is not ReportStatus.PENDING
        await self._move(
            key,
            ReportStatus.GATHERING,
            f"{'resumed: ' if resumed else ''}asking {', '.join(record.requested)}"
            + (f"; reusing {', '.join(carried)}" if carried else ""),
            lease.until(),
        )
        gather_id = await store.begin_gather(
            key.report_id,
            owner,
            attempt=uuid.uuid4().hex[:8],
            at=self._clock(),
            requested=record.requested,
            carried=carried,
            carried_from=record.carried_from,
        )
        decided: list[Aborted] = []

        async def announce_abort(gather: Gather) -> None:
            """Decided at the first failure: ReportAborted goes out now; the gather goes on
            storing the other services' answers (kept under the lease) for a replay to reuse."""
            outcome = aborted(key, gather.reasons)
            why = "; ".join(map(str, outcome.report.reasons))
            await store.finish_aborted(
                key.report_id, outcome.report, self._clock(), why, owner=owner, collect_until=lease.until()
            )
            decided.append(outcome)
            log.warning("report %s period %s → aborted: %s", key.report_id, key.period.period_id, why)
            if self._on_stored is not None:
                self._on_stored()

        gather = await self._gatherer.gather(
            key.report_id,
            key.period,
            record.requested,
            deadline,
            StoreSink(store, key.report_id, owner, gather_id, self._clock, lease.renewal),
            self._on_progress,
            announce_abort,
        )
        await store.save_outcomes(
            key.report_id,
            owner,
            gather_id,
            [_stored(outcome, outcome.service in gather.sent) for outcome in gather.services.values()],
            self._clock(),
        )
        if decided:
            await lease.stop()
            await store.release(key.report_id, self._clock(), owner=owner)
            return gather, decided[0]
        pricer = Pricer(
            store,
            self.card_of(record),
            owner,
            self._clock,
            self._pricing_page,
            processes=self._pricing_processes,
            numbering=self.numbering if self.approval == "auto" else None,
            lease=lease,
        )
        return gather, await pricer.run(key, gather_id, record.supersedes)

    def card_of(self, record: ReportRecord) -> RateCard:
        """The card fixed on the report when it was accepted or replayed (this coordinator's own
        for a report stored before cards were fixed at acceptance)."""
        return self.card if record.rate_card is None else RateCard.model_validate(record.rate_card)

    async def _after_failure(self, key: ReportKey, error: BaseException) -> None:
        """Retry the build later, or abort the report as ``internal`` (see ``build``)."""
        what = f"{type(error).__name__}: {error}"
        log.error("report %s: build failed: %s", key.report_id, what, exc_info=error)
        try:
            current = await self.store.get(key.report_id)
            if current is None or current.status not in ACTIVE or current.owner != self.owner:
                return  # finished, aborted while collecting, or no longer ours: nothing to decide
            attempts = current.build_attempts
            if transient(error) and attempts < self.max_build_attempts:
                retry_at = self._clock() + min(RETRY_BACKOFF * 2 ** max(attempts - 1, 0), MAX_RETRY_BACKOFF)
                if await self.store.note_failure(key.report_id, self.owner, what, retry_at):
                    log.warning(
                        "report %s: attempt %d of %d failed (%s); it is built again from %s",
                        key.report_id,
                        attempts,
                        self.max_build_attempts,
                        what,
                        retry_at.isoformat(),
                    )
                return
            after = f" (attempt {attempts} of {self.max_build_attempts})" if transient(error) else ""
            await self._abort_internal(key, f"{current.status} failed{after}: {what}")
        except Exception:  # the store is down too: the lease runs out and a later build decides
            log.exception(
                "report %s: could not record the failure; it is retried when its lease ends", key.report_id
            )

    async def _give_up(self, record: ReportRecord, key: ReportKey) -> Aborted:
        last = record.last_error or "no error recorded"
        return await self._abort_internal(
            key, f"gave up after {record.build_attempts} build attempts; the last failed with {last}"
        )

    async def _abort_internal(self, key: ReportKey, message: str) -> Aborted:
        outcome = aborted(key, [AbortReason(code=AbortCode.INTERNAL, message=message[:2000])])
        why = "; ".join(map(str, outcome.report.reasons))
        await self.store.finish_aborted(key.report_id, outcome.report, self._clock(), why, owner=self.owner)
        log.error("report %s period %s → aborted: %s", key.report_id, key.period.period_id, why)
        if self._on_stored is not None:
            self._on_stored()
        return outcome

    async def _move(self, key: ReportKey, status: ReportStatus, reason: str, lease_until: datetime) -> None:
        await self.store.move(
            key.report_id, status, self._clock(), reason, owner=self.owner, lease_until=lease_until
        )
        log.info("report %s period %s → %s: %s", key.report_id, key.period.period_id, status, reason)


def transient(error: BaseException) -> bool:
    """An error worth building the report again for: the store or the broker briefly unreachable
    or busy. Anything else (a bug, data nobody foresaw) would fail the same way again."""
    if isinstance(error, DBAPIError):
        return isinstance(error, OperationalError | InterfaceError) or bool(error.connection_invalidated)
    return isinstance(error, OSError | TimeoutError | aio_pika.exceptions.AMQPError)


def _stored(outcome: ServiceOutcome, asked: bool) -> StoredReply:
    never_asked = not asked and outcome.state is ServiceState.WAITING
    return StoredReply(
        service=outcome.service,
        request_id=None if never_asked else outcome.request_id,
        state=NOT_ASKED if never_asked else outcome.state.value,
        reason_code=outcome.reason.code.value if outcome.reason else None,
        reason=outcome.reason.message if outcome.reason else None,
        records=outcome.records,
    )


def _log_failure(task: asyncio.Task[ReportRun], record: ReportRecord) -> None:
    if not task.cancelled() and task.exception() is not None:
        with report_context(record.report_id, period_id=record.period.period_id):
            log.error("%s ended with %r", task.get_name(), task.exception())
