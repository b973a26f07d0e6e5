"""Bootstrap: the one place where the coordinator's parts are wired together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import AbstractRobustConnection

from accounting.broker import connect
from accounting.coordinator import Coordinator, PeriodConsumer, ReportRun
from accounting.core.rate_card import RateCard
from accounting.gatherer import Clock, ProgressCallback, UsageGatherer, utc_now
from accounting.ledger import ReportLedger
from accounting.publisher import AmqpEventPublisher
from accounting.settings import Settings, load_rate_card
from contracts import Topology


@dataclass
class CoordinatorApp:
    connection: AbstractRobustConnection
    coordinator: Coordinator
    publisher: AmqpEventPublisher
    gatherer: UsageGatherer
    consumer: PeriodConsumer | None

    async def close(self) -> None:
        """Stop taking periods, then close the publisher and the connection; safe to call twice."""
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        await self.gatherer.close()
        await self.publisher.close()
        await self.connection.close()


async def start_coordinator(
    settings: Settings,
    *,
    card: RateCard | None = None,
    consume: bool = True,
    ledger: ReportLedger | None = None,
    clock: Clock = utc_now,
    on_progress: ProgressCallback | None = None,
    on_report: Callable[[ReportRun], None] | None = None,
) -> CoordinatorApp:
    """Connect, declare the topology and (with ``consume``) start taking PeriodClosed events."""
    services = settings.require_services()
    card = card or load_rate_card(settings.rate_card)
    topology = Topology(settings.namespace)
    connection = await connect(settings.amqp_url)
    try:
        publisher = await AmqpEventPublisher.create(connection, topology, settings.publish_timeout_seconds)
        gatherer = await UsageGatherer.create(connection, topology, settings.publish_timeout_seconds, clock)
        coordinator = Coordinator(
            services=services,
            deadline=timedelta(seconds=settings.deadline_seconds),
            card=card,
            gatherer=gatherer,
            publisher=publisher,
            ledger=ledger,
            clock=clock,
            on_progress=on_progress,
            on_report=on_report,
        )
        consumer = await PeriodConsumer.start(connection, topology, coordinator) if consume else None
    except BaseException:
        await connection.close()
        raise
    return CoordinatorApp(connection, coordinator, publisher, gatherer, consumer)
