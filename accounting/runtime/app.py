"""Bootstrap: the one place where the coordinator's parts are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from accounting.amqp.gatherer import ProgressCallback, UsageGatherer
from accounting.amqp.publisher import AmqpEventPublisher
from accounting.amqp.topology import declare_usage_queues
from accounting.core.gather_limits import ReplyLimits
from accounting.core.rate_card import RateCard
from accounting.infra.clock import Clock, utc_now
from accounting.infra.supervisor import TaskHealth, supervise
from accounting.infra.traces import report_context
from accounting.runtime.settings import Settings, load_rate_card
from accounting.service.approval import approve_overdue
from accounting.service.coordinator import Coordinator, ReportRun
from accounting.service.period_consumer import PeriodConsumer
from accounting.service.relay import OutboxRelay
from accounting.store.repository import ReportStore
from contracts import Topology
from observability.startup import Startup
from transport.connection import broker_may_come_back, broker_problem, broker_user, connect
from transport.redact import redact_url

log = logging.getLogger("reckon.app")

CONSUMER_CHECK_SECONDS = 5.0


def instance_name() -> str:
    """Unique per coordinator object, not just per process: two in one process never share a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def open_store(url: str, *, create: bool = True, busy_timeout: float = 30.0) -> ReportStore:
    """Open the store and migrate it; with ``create=False`` (inspection) a missing SQLite file is
    an error rather than a new empty store, and nothing is migrated."""
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise FileNotFoundError(
                f"no store at {path}: check RECKON_STORE_URL, or create one with `reckon db upgrade`"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return await ReportStore.open(url, migrate=create, busy_timeout=busy_timeout)
    except ArgumentError as error:
        raise StoreMisconfigured(f"RECKON_STORE_URL={redact_url(url)} cannot be used: {error}") from None
    except (OSError, SQLAlchemyError) as error:
        detail = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise StoreUnavailable(
            f"the store at {redact_url(url)} could not be opened: {detail}", type(error).__name__
        ) from error


class WrongBrokerUser(RuntimeError):
    """The coordinator is connected as another broker user than ``coordinator_user`` says."""


class StoreUnavailable(RuntimeError):
    """The store did not answer or could not be migrated; the message names it (without password),
    ``reason`` is the short form for ``/readyz``."""

    def __init__(self, message: str, reason: str = "not answering") -> None:
        super().__init__(message)
        self.reason = reason


class StoreMisconfigured(StoreUnavailable):
    """RECKON_STORE_URL can never work as it is (an unknown dialect or driver): waiting would not help."""


def store_may_come_back(error: BaseException) -> bool:
    return isinstance(error, StoreUnavailable) and not isinstance(error, StoreMisconfigured)


def store_problem(error: BaseException) -> str:
    reason = error.reason if isinstance(error, StoreUnavailable) else type(error).__name__
    return f"not answering or not migrated ({reason})"


def reply_limits(settings: Settings) -> ReplyLimits:
    return ReplyLimits(
        max_reply_bytes=settings.max_reply_bytes,
        max_records_per_chunk=settings.max_records_per_chunk,
        max_chunks_per_answer=settings.max_chunks_per_answer,
        max_records_per_answer=settings.max_records_per_answer,
        max_attributes=settings.max_attributes,
        max_attribute_length=settings.max_attribute_length,
    )


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1]
    return None if path in ("", ":memory:") else Path(path)


@dataclass
class CoordinatorApp:
    settings: Settings
    connection: AbstractRobustConnection
    store: ReportStore
    coordinator: Coordinator
    publisher: AmqpEventPublisher
    gatherer: UsageGatherer
    relay: OutboxRelay
    consumer: PeriodConsumer | None = None
    resumer: TaskHealth = field(default_factory=lambda: TaskHealth("resume"))
    period_consumer: TaskHealth = field(default_factory=lambda: TaskHealth("period_consumer"))
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _stop_consuming: asyncio.Event = field(default_factory=asyncio.Event)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def health(self) -> list[TaskHealth]:
        """Every supervised task of this coordinator, for logs and readiness."""
        tasks = [self.resumer, self.period_consumer]
        return [self.relay.health, *tasks] if self.settings.relay else tasks

    def start_background(self) -> None:
        """The relay (when enabled) and the periodic take-over of abandoned reports, supervised."""
        if self.settings.relay:
            self._background.append(asyncio.create_task(self.relay.run(self._stop), name="outbox relay"))
        self._background.append(
            asyncio.create_task(
                supervise(self.resumer, self._resume_loop, self._stop), name="resume abandoned"
            )
        )

    async def start_consuming(self, topology: Topology) -> None:
        """Take PeriodClosed events, supervised: a consumer whose channel is gone is started again."""
        self.consumer = await PeriodConsumer.start(
            self.connection,
            topology,
            self.coordinator,
            self.settings.scheduler_user,
            self.settings.dead_letters,
        )
        self._background.append(
            asyncio.create_task(
                supervise(self.period_consumer, lambda: self._watch_consumer(topology), self._stop_consuming),
                name="period consumer",
            )
        )

    async def _watch_consumer(self, topology: Topology) -> None:
        if self.consumer is None:
            self.consumer = await PeriodConsumer.start(
                self.connection,
                topology,
                self.coordinator,
                self.settings.scheduler_user,
                self.settings.dead_letters,
            )
        closed_checks = 0
        while not self._stop_consuming.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_consuming.wait(), CONSUMER_CHECK_SECONDS)
            # A robust channel reopens itself after a channel error or a reconnect; one that stays
            # closed for two checks in a row is replaced.
            closed_checks = closed_checks + 1 if self.consumer.closed else 0
            if closed_checks >= 2:
                consumer, self.consumer = self.consumer, None
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise ConnectionError("the PeriodClosed consumer's channel stayed closed")
            self.period_consumer.ok()

    async def _resume_loop(self) -> None:
        """Take over abandoned reports and, with ``auto_approve_after_seconds``, approve the
        drafts that waited that long."""
        overdue = self.settings.auto_approve_after_seconds
        while not self._stop.is_set():
            await self.coordinator.resume_abandoned()
            if overdue is not None and not self.coordinator.previews:
                approved = await approve_overdue(
                    self.store, self.coordinator.numbering, timedelta(seconds=overdue), utc_now()
                )
                if approved:
                    self.relay.wake()
            self.resumer.ok()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.resume_every_seconds)

    async def close(self) -> None:
        """Graceful shutdown: stop taking periods, let the report in flight finish within the grace
        period or leave it for a restart to resume, flush the relay, close; safe to call twice."""
        self._stop_consuming.set()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        self._stop.set()
        building = dict(self.coordinator.building)
        if building:
            _, unfinished = await asyncio.wait(
                building.values(), timeout=self.settings.shutdown_grace_seconds
            )
            for report in unfinished:
                report.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            for report_id, report in building.items():
                if report in unfinished:
                    with report_context(report_id):
                        log.warning("report %s left unfinished; the next coordinator resumes it", report_id)
                    await self.store.release(report_id, utc_now(), owner=self.coordinator.owner)
        # The relay and the resume loop see the stop and end after their current step; cancelling
        # them mid-transaction could leave a SQLite write lock behind until the busy timeout.
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=self.settings.shutdown_grace_seconds + 10)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()
        if self.settings.relay:
            try:
                await self.relay.flush(
                    until=utc_now() + timedelta(seconds=self.settings.shutdown_grace_seconds)
                )
            except Exception:
                log.exception("relay could not flush before shutdown; the next start relays what is left")
        await self.gatherer.close()
        await self.publisher.close()
        await self.connection.close()
        await self.store.close()


async def start_coordinator(
    settings: Settings,
    *,
    card: RateCard | None = None,
    consume: bool = True,
    background: bool = True,
    clock: Clock = utc_now,
    on_progress: ProgressCallback | None = None,
    on_report: Callable[[ReportRun], None] | None = None,
    previews: bool = False,
    startup: Startup | None = None,
) -> CoordinatorApp:
    """Open the store, connect, declare the topology, start the relay and (with ``consume``) take
    PeriodClosed events. With ``startup`` (a long-running ``reckon coordinator``), a store or a
    broker that does not answer yet, or refuses this user for now, is waited for with backoff;
    without it (a test, ``reckon demo``) the first failure is raised."""
    settings.require_services()  # no service configured: an error at once, not a wait
    card = card or load_rate_card(settings.rate_card)
    topology = Topology(settings.namespace)

    async def opened() -> ReportStore:
        return await open_store(settings.store_url, busy_timeout=settings.store_busy_timeout_seconds)

    if startup is None:
        store = await opened()
    else:
        store = await startup.wait_for(
            "the store", opened, store_may_come_back, store_problem, holds_startup=True
        )

    async def wired() -> CoordinatorApp:
        return await _on_the_broker(settings, store, card, topology, clock, on_progress, on_report, previews)

    try:
        if startup is None:
            app = await wired()
        else:
            app = await startup.wait_for("the broker", wired, broker_may_come_back, broker_problem)
    except BaseException:
        await store.close()
        raise
    try:
        if background:
            app.start_background()
        if consume:
            await app.start_consuming(topology)
    except BaseException:
        await app.connection.close()
        await store.close()
        raise
    return app


async def _on_the_broker(
    settings: Settings,
    store: ReportStore,
    card: RateCard,
    topology: Topology,
    clock: Clock,
    on_progress: ProgressCallback | None,
    on_report: Callable[[ReportRun], None] | None,
    previews: bool,
) -> CoordinatorApp:
    """Connect, check the user, declare what the coordinator owns and wire the parts; the
    connection is closed again if any of it fails (the next attempt opens its own)."""
    # Named, so an operator (and the fault suite) can find it in the broker's connection list.
    connection = await connect(settings, name=f"reckon coordinator {settings.namespace}".rstrip())
    try:
        user = broker_user(connection)
        if settings.coordinator_user is not None and user != settings.coordinator_user:
            raise WrongBrokerUser(
                f"coordinator_user is {settings.coordinator_user!r} but this coordinator connects as "
                f"{user!r} (AMQP_URL): the sub-services would answer none of its requests and the "
                "payment service would refuse its invoices. Give it that user's credentials, or set "
                "coordinator_user to the user it connects as"
            )
        publisher = await AmqpEventPublisher.create(
            connection, topology, settings.publish_timeout_seconds, settings.dead_letters
        )
        await declare_usage_queues(connection, topology, settings.require_services(), settings.dead_letters)
        gatherer = await UsageGatherer.create(
            connection,
            topology,
            settings.publish_timeout_seconds,
            clock,
            settings.reply_prefetch,
            senders=settings.service_users,
            limits=reply_limits(settings),
        )
    except BaseException:
        await connection.close()
        raise
    if not settings.service_users:
        log.warning(
            "service_users is not set: replies are taken from broker user %r for every service "
            "(fine with one broker user in development; give each service its own user in production)",
            gatherer.user,
        )
    relay = OutboxRelay(
        store,
        publisher,
        clock,
        settings.relay_poll_seconds,
        settings.relay_claim_seconds,
        window=settings.relay_window,
    )
    coordinator = Coordinator(
        services=settings.require_services(),
        deadline=timedelta(seconds=settings.deadline_seconds),
        card=card,
        gatherer=gatherer,
        store=store,
        owner=instance_name(),
        clock=clock,
        lease=timedelta(seconds=settings.lease_seconds),
        pricing_processes=settings.pricing_processes,
        pricing_page_records=settings.pricing_page_records,
        max_build_attempts=settings.max_build_attempts,
        on_progress=on_progress,
        on_report=on_report,
        on_stored=relay.wake,
        calendar=settings.billing_calendar(),
        previews=previews,
        numbering=settings.numbering(),
        approval=settings.approval,
    )
    return CoordinatorApp(settings, connection, store, coordinator, publisher, gatherer, relay)
