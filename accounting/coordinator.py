"""The accounting coordinator: one stored report per period, built from the services' replies.

The gather machine, normalizer and pricing are the pure core; this module moves a stored
report through its lifecycle, stores every raw reply, and writes the invoices and events to the
outbox in one transaction. The relay (``accounting/relay.py``) publishes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from accounting.broker import QueueConsumer
from accounting.core.gather import Gather, GatherStatus, ServiceOutcome, ServiceState
from accounting.core.lifecycle import ReportHistory, ReportStatus
from accounting.core.normalizer import Normalized
from accounting.core.rate_card import RateCard
from accounting.core.report import (
    Aborted,
    ReportKey,
    ReportOutcome,
    aborted,
    normalize_usage,
    price,
    records_from_raw,
)
from accounting.gatherer import Clock, ProgressCallback, UsageGatherer, utc_now
from accounting.store.repository import ReportExists, ReportRecord, ReportStore, StoredReply
from contracts import InvoiceIssued, PeriodClosed, Topology, UsageRecord, report_id

log = logging.getLogger("reckon.coordinator")

NOT_ASKED = "not asked"
"""Stored state of a service whose request was never sent: the report aborted first."""

LEASE_MARGIN = timedelta(seconds=60)
"""How long past its deadline a report may take to normalize, price and store before another
coordinator may take it over as abandoned."""


@dataclass(frozen=True)
class ReportRun:
    """What one build of a report produced, for the CLI and for tests."""

    key: ReportKey
    outcome: ReportOutcome
    history: ReportHistory
    gather: Gather
    """The settled gather; its ``ignored`` counts keep growing as late replies arrive."""
    carried: Mapping[str, StoredReply] = field(default_factory=dict)
    """Services not asked again in a replay: their stored good replies were used."""

    @property
    def records(self) -> dict[str, int]:
        """Records used per service, asked or carried over."""
        counts = {service: reply.records for service, reply in self.carried.items()}
        counts.update({service: len(outcome.records) for service, outcome in self.gather.services.items()})
        return counts


class Coordinator:
    """Builds reports: PENDING → GATHERING → NORMALIZING → PRICING → PUBLISHING (→ COMPLETED by
    the relay) or ABORTED, every transition stored with its reason and logged with the report id.
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
        on_progress: ProgressCallback | None = None,
        on_report: Callable[[ReportRun], None] | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.services = tuple(services)
        self.deadline = deadline
        self.card = card
        self.store = store
        self.owner = owner
        self._gatherer = gatherer
        self._clock = clock
        self._on_progress = on_progress
        self._on_report = on_report
        self._on_stored = on_stored
        self.building: dict[UUID, asyncio.Task[ReportRun]] = {}
        """Reports this instance is building, by report id (for a graceful shutdown)."""

    async def accept(self, event: PeriodClosed) -> ReportRecord | None:
        """Commit revision 1 of the period's report; None when the period already has a report."""
        period = event.period
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
                lease_until=self._clock() + self.deadline + LEASE_MARGIN,
            )
        except ReportExists:
            log.info(
                "period %s already has a report; event from %s ignored", period.period_id, event.requested_by
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
        task.add_done_callback(_log_failure)
        return task

    async def resume_abandoned(self) -> list[asyncio.Task[ReportRun]]:
        """Take over reports whose builder stopped or died, and build them again from the gather."""
        return [self.start_building(record) for record in await self.claim_abandoned()]

    async def claim_abandoned(self, period_id: str | None = None) -> list[ReportRecord]:
        now = self._clock()
        lease = now + self.deadline + LEASE_MARGIN
        claimed = await self.store.claim_abandoned(self.owner, now, lease, period_id)
        for record in claimed:
            log.warning(
                "report %s period %s: resuming an abandoned report", record.report_id, record.period.period_id
            )
        return claimed

    async def build(self, record: ReportRecord) -> ReportRun:
        key = ReportKey(record.report_id, record.revision, record.period)
        carried = await self._carried(record)
        deadline = self._clock() + self.deadline
        resumed = record.status is not ReportStatus.PENDING
        asking = ", ".join(record.requested)
        await self._move(
            key,
            ReportStatus.GATHERING,
            f"{'resumed: ' if resumed else ''}asking {asking}"
            + (f"; reusing {', '.join(carried)}" if carried else ""),
            lease_until=deadline + LEASE_MARGIN,
        )
        gather = await self._gatherer.gather(
            key.report_id, key.period, record.requested, deadline, self._on_progress
        )
        await self.store.save_replies(
            key.report_id,
            [
                *(_stored(outcome, outcome.service in gather.sent) for outcome in gather.services.values()),
                *carried.values(),
            ],
            self._clock(),
        )
        outcome = await self._settle(key, record, gather, carried)
        if isinstance(outcome, Aborted):
            reasons = "; ".join(map(str, outcome.report.reasons))
            await self.store.finish_aborted(key.report_id, outcome.report, self._clock(), reasons)
            log.warning("report %s period %s → aborted: %s", key.report_id, key.period.period_id, reasons)
        else:
            total = (
                f"{len(outcome.invoices)} invoices, total {outcome.report.total} {outcome.report.currency}"
            )
            await self.store.finish_completed(
                key.report_id,
                outcome.invoices,
                outcome.report,
                self._clock(),
                total,
                rate_card=self.card.model_dump(mode="json"),
            )
            log.info("report %s period %s → publishing: %s", key.report_id, key.period.period_id, total)
        if self._on_stored is not None:
            self._on_stored()
        if gather.ignored:
            log.info("report %s: ignored replies %s", key.report_id, dict(gather.ignored))
        run = ReportRun(
            key,
            outcome,
            ReportHistory(str(key.report_id), await self.store.history(key.report_id)),
            gather,
            carried,
        )
        if self._on_report is not None:
            self._on_report(run)
        return run

    async def _carried(self, record: ReportRecord) -> dict[str, StoredReply]:
        """The good replies of the services a replay does not ask again."""
        if record.carried_from is None:
            return {}
        stored = await self.store.replies(record.carried_from)
        return {
            service: replace(reply, carried_from=record.carried_from)
            for service, reply in stored.items()
            if service not in record.requested and reply.state == ServiceState.OK
        }

    async def _settle(
        self, key: ReportKey, record: ReportRecord, gather: Gather, carried: Mapping[str, StoredReply]
    ) -> ReportOutcome:
        if gather.status is GatherStatus.ABORTED:
            return aborted(key, gather.reasons)
        await self._move(key, ReportStatus.NORMALIZING, "every service answered")
        records: dict[str, tuple[UsageRecord, ...]] = {
            service: records_from_raw(reply.raw) for service, reply in carried.items()
        }
        records.update(gather.records())
        normalized = normalize_usage(key, records, self.card)
        if not isinstance(normalized, Normalized):
            return normalized
        await self._move(key, ReportStatus.PRICING, f"{normalized.record_count} records")
        previous: list[InvoiceIssued] = []
        if record.supersedes is not None:
            previous = await self.store.invoices(report_id=record.supersedes)
        return price(key, normalized, self.card, previous)

    async def _move(
        self, key: ReportKey, status: ReportStatus, reason: str, lease_until: datetime | None = None
    ) -> None:
        await self.store.move(key.report_id, status, self._clock(), reason, lease_until=lease_until)
        log.info("report %s period %s → %s: %s", key.report_id, key.period.period_id, status, reason)


def _stored(outcome: ServiceOutcome, asked: bool) -> StoredReply:
    never_asked = not asked and outcome.state is ServiceState.WAITING
    return StoredReply(
        service=outcome.service,
        request_id=None if never_asked else outcome.request_id,
        state=NOT_ASKED if never_asked else outcome.state.value,
        reason_code=outcome.reason.code.value if outcome.reason else None,
        reason=outcome.reason.message if outcome.reason else None,
        records=len(outcome.records),
        raw=tuple(body.decode("utf-8", errors="replace") for body in outcome.raw_replies),
    )


def _log_failure(task: asyncio.Task[ReportRun]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "%s failed; it stays in the store and is resumed later",
            task.get_name(),
            exc_info=task.exception(),
        )


class PeriodConsumer(QueueConsumer):
    """Consumes ``accounting.period-closed`` (single active consumer across replicas).

    An event is acknowledged once its report row is committed; the report is then built in the
    background. A repeated event for a period that has a report is acknowledged and ignored.
    """

    def __init__(self, coordinator: Coordinator, channel: AbstractChannel, queue: AbstractQueue) -> None:
        super().__init__(channel, queue)
        self._coordinator = coordinator
        self.handled = 0
        """PeriodClosed events acknowledged, duplicates included."""

    @classmethod
    async def start(
        cls, connection: AbstractConnection, topology: Topology, coordinator: Coordinator
    ) -> PeriodConsumer:
        channel, queue = await cls.open_queue(connection, topology, topology.period_closed_queue, prefetch=1)
        consumer = cls(coordinator, channel, queue)
        await consumer.begin()
        return consumer

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = PeriodClosed.from_json(message.body)
        except ValidationError as error:
            log.error("rejected an invalid PeriodClosed (parked in dead letters): %s", error)
            await message.reject(requeue=False)
            return
        try:
            record = await self._coordinator.accept(event)
        except Exception:
            log.exception("period %s: could not store its report; the event is requeued", event.period_id)
            await message.nack(requeue=True)
            return
        await message.ack()
        self.handled += 1
        if record is not None:
            self._coordinator.start_building(record)
