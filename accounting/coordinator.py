"""The accounting coordinator: PeriodClosed in, one report out (invoices, or a stored abort reason)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from accounting.broker import declare_coordinator_topology
from accounting.core.gather import Gather, GatherStatus
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
)
from accounting.gatherer import Clock, ProgressCallback, UsageGatherer, utc_now
from accounting.ledger import InMemoryLedger, ReportLedger
from accounting.publisher import EventPublisher
from contracts import Period, PeriodClosed, Topology, report_id

log = logging.getLogger("reckon.coordinator")


@dataclass(frozen=True)
class ReportRun:
    """What one report run produced, for the CLI and for tests."""

    key: ReportKey
    outcome: ReportOutcome
    history: ReportHistory
    gather: Gather
    """The settled gather; its ``ignored`` counts keep growing as late replies arrive."""

    @property
    def records(self) -> dict[str, int]:
        """Records received per configured service."""
        return {service: len(outcome.records) for service, outcome in self.gather.services.items()}


class Coordinator:
    """Runs one report per period: gather → normalize → price → publish.

    The gather, normalizer and pricing are the pure core; this class only moves the report
    through its lifecycle, logs every transition with the report id, and publishes.
    """

    def __init__(
        self,
        *,
        services: Sequence[str],
        deadline: timedelta,
        card: RateCard,
        gatherer: UsageGatherer,
        publisher: EventPublisher,
        ledger: ReportLedger | None = None,
        clock: Clock = utc_now,
        on_progress: ProgressCallback | None = None,
        on_report: Callable[[ReportRun], None] | None = None,
    ) -> None:
        self.services = tuple(services)
        self.deadline = deadline
        self.card = card
        self._gatherer = gatherer
        self._publisher = publisher
        self._ledger = ledger or InMemoryLedger()
        self._clock = clock
        self._on_progress = on_progress
        self._on_report = on_report

    async def run_period(self, period: Period, revision: int = 1) -> ReportRun:
        key = ReportKey(report_id(period.period_id, revision), revision, period)
        history = ReportHistory.start(str(key.report_id), self._clock())
        self._move(history, key, ReportStatus.GATHERING, f"asking {', '.join(self.services)}")
        gather = await self._gatherer.gather(
            key.report_id, period, self.services, self._clock() + self.deadline, self._on_progress
        )
        outcome = self._settle(key, gather, history)
        if isinstance(outcome, Aborted):
            self._move(history, key, ReportStatus.ABORTED, "; ".join(map(str, outcome.report.reasons)))
            await self._publisher.publish_report(outcome.report)
        else:
            self._move(history, key, ReportStatus.PUBLISHING, f"{len(outcome.invoices)} invoices")
            for invoice in outcome.invoices:
                await self._publisher.publish_invoice(invoice)
            await self._publisher.publish_report(outcome.report)
            self._move(
                history, key, ReportStatus.COMPLETED, f"total {outcome.report.total} {self.card.currency}"
            )
        if gather.ignored:
            log.info("report %s: ignored replies %s", key.report_id, dict(gather.ignored))
        run = ReportRun(key, outcome, history, gather)
        if self._on_report is not None:
            self._on_report(run)
        return run

    def _settle(self, key: ReportKey, gather: Gather, history: ReportHistory) -> ReportOutcome:
        if gather.status is GatherStatus.ABORTED:
            return aborted(key, gather.reasons)
        self._move(history, key, ReportStatus.NORMALIZING, "every service answered")
        normalized = normalize_usage(key, gather.records(), self.card)
        if not isinstance(normalized, Normalized):
            return normalized
        self._move(history, key, ReportStatus.PRICING, f"{normalized.record_count} records")
        return price(key, normalized, self.card)

    def _move(self, history: ReportHistory, key: ReportKey, status: ReportStatus, reason: str) -> None:
        history.move(status, self._clock(), reason)
        level = logging.WARNING if status is ReportStatus.ABORTED else logging.INFO
        log.log(level, "report %s period %s → %s: %s", key.report_id, key.period.period_id, status, reason)

    async def on_period_closed(self, event: PeriodClosed) -> ReportRun | None:
        """Handle a PeriodClosed: a second event for the same period makes no second report."""
        revision = self._ledger.claim(event.period_id)
        if revision is None:
            log.info(
                "period %s already has a report; event from %s ignored", event.period_id, event.requested_by
            )
            return None
        try:
            return await self.run_period(event.period, revision)
        except BaseException:
            self._ledger.release(event.period_id)
            raise


class PeriodConsumer:
    """Consumes ``accounting.period-closed``; acknowledges an event only once its report is done."""

    def __init__(self, coordinator: Coordinator, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._coordinator = coordinator
        self._channel = channel
        self._queue = queue
        self._tag: str | None = None
        self.handled = 0
        """PeriodClosed events acknowledged, duplicates included."""

    @classmethod
    async def start(
        cls, connection: AbstractConnection, topology: Topology, coordinator: Coordinator
    ) -> PeriodConsumer:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        await declare_coordinator_topology(channel, topology)
        queue = await channel.get_queue(topology.period_closed_queue.name)
        consumer = cls(coordinator, channel, queue)
        consumer._tag = await queue.consume(consumer.on_message)
        return consumer

    async def stop(self) -> None:
        if self._tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._tag)
        self._tag = None
        if not self._channel.is_closed:
            await self._channel.close()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = PeriodClosed.from_json(message.body)
        except ValidationError as error:
            log.error("rejected an invalid PeriodClosed (parked in dead letters): %s", error)
            await message.reject(requeue=False)
            return
        try:
            await self._coordinator.on_period_closed(event)
        except Exception:
            log.exception("period %s: report failed; the event is requeued", event.period_id)
            await message.nack(requeue=True)
            return
        await message.ack()
        self.handled += 1
