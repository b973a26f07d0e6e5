"""Helpers for integration tests: in-process services, a running coordinator, event listeners."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from accounting.core.lifecycle import ReportStatus
from accounting.core.rate_card import RateCard
from accounting.runtime.app import CoordinatorApp, start_coordinator
from accounting.runtime.settings import Settings
from accounting.service.coordinator import ReportRun
from contracts import CONTENT_TYPE, Period, PeriodClosed, Topology, UsageRecord, UsageRequest
from observability import logs
from workers.sdk import Responder, UsageService, WorkerSettings

CARD_TOML = """
currency = "EUR"
minor_units = 2
rounding = "half_even"

[items.vcpu]
description = "vCPU hours"
unit = "vCPU-hour"
price = { model = "per_unit", unit_price = "0.0320" }

[items.memory]
description = "Memory"
unit = "GB-hour"
price = { model = "per_unit", unit_price = "0.0040" }

[items.block_storage]
description = "Block storage"
unit = "GB-month"
price = { model = "graduated", tiers = [
    { up_to = "50", unit_price = "0.100" },
    { unit_price = "0.080" },
] }

[items.object_storage]
description = "Object storage"
unit = "GB-month"
price = { model = "per_unit", unit_price = "0.0230" }
"""
TEST_CARD = RateCard.from_toml(CARD_TOML)


@dataclass
class StaticService:
    """A sub-service with canned behaviour: records, a delay, or an exception."""

    name: str
    records: Sequence[UsageRecord] = ()
    delay: float = 0.0
    error: Exception | None = None
    calls: list[Period] = field(default_factory=list)
    answered: int = 0
    """Calls that returned their records (after the delay)."""

    async def usage(self, period: Period) -> Sequence[UsageRecord]:
        self.calls.append(period)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.answered += 1
        return self.records


@asynccontextmanager
async def serving(
    connection: AbstractConnection, topology: Topology, *services: UsageService, chunk_size: int = 500
) -> AsyncIterator[list[Responder]]:
    settings = WorkerSettings(namespace=topology.namespace, chunk_size=chunk_size)
    responders = [await Responder.create(connection, service, settings) for service in services]
    try:
        yield responders
    finally:
        for responder in responders:
            await responder.close()


@asynccontextmanager
async def raw_service(
    connection: AbstractConnection,
    topology: Topology,
    name: str,
    answer: Callable[[UsageRequest], Sequence[bytes]],
) -> AsyncIterator[None]:
    """A sub-service that answers each request with the raw bodies ``answer`` gives — what a
    third-party service might send, valid or not — signed as the test broker's user."""
    channel = await connection.channel()
    spec = topology.usage_queue(name)
    exchange = await channel.declare_exchange(spec.exchange.name, spec.exchange.kind, durable=True)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    await queue.bind(exchange, spec.routing_key)

    async def reply(message: AbstractIncomingMessage) -> None:
        request = UsageRequest.from_json(message.body)
        for body in answer(request):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body, content_type=CONTENT_TYPE, correlation_id=request.request_id, user_id="guest"
                ),
                routing_key=message.reply_to or "",
            )
        await message.ack()

    tag = await queue.consume(reply)
    try:
        yield
    finally:
        await queue.cancel(tag)
        await channel.close()


@asynccontextmanager
async def serving_as(
    connection: AbstractConnection, topology: Topology, *services: UsageService, coordinator_user: str
) -> AsyncIterator[list[Responder]]:
    """Serve ``services`` on ``connection`` (its own broker user), answering only ``coordinator_user``."""
    settings = WorkerSettings(namespace=topology.namespace, coordinator_user=coordinator_user)
    responders = [await Responder.create(connection, service, settings) for service in services]
    try:
        yield responders
    finally:
        for responder in responders:
            await responder.close()


@dataclass
class RunningCoordinator:
    app: CoordinatorApp
    runs: list[ReportRun]
    report_done: asyncio.Event

    async def next_run(self, timeout: float = 30) -> ReportRun:
        await asyncio.wait_for(self.report_done.wait(), timeout)
        return self.runs[-1]

    async def run_period(self, period: Period) -> ReportRun:
        """Accept and build revision 1 of ``period`` directly, as the consumer would."""
        run = await self.app.coordinator.run_period(PeriodClosed.for_period(period, "test"))
        assert run is not None, f"period {period.period_id} already had a report"
        return run

    async def status(self, run: ReportRun) -> ReportStatus:
        record = await self.app.store.get(run.key.report_id)
        assert record is not None
        return record.status

    async def wait_until(self, run: ReportRun, status: ReportStatus, timeout: float = 15) -> None:
        async def reached() -> bool:
            return await self.status(run) is status

        await eventually(reached, timeout)


@asynccontextmanager
async def coordinator(
    amqp_url: str,
    topology: Topology,
    services: Sequence[str],
    *,
    deadline_seconds: float = 5.0,
    card: RateCard = TEST_CARD,
    consume: bool = True,
    store_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningCoordinator]:
    runs: list[ReportRun] = []
    done = asyncio.Event()

    def on_report(run: ReportRun) -> None:
        runs.append(run)
        done.set()

    with tempfile.TemporaryDirectory(prefix="reckon-test-") as workdir:
        settings = Settings(
            amqp_url=amqp_url,
            namespace=topology.namespace,
            services=tuple(services),
            deadline_seconds=deadline_seconds,
            store_url=store_url or f"sqlite+aiosqlite:///{workdir}/reckon.sqlite3",
            relay_poll_seconds=0.2,
            shutdown_grace_seconds=1,
            **overrides,
        )
        app = await start_coordinator(settings, card=card, consume=consume, on_report=on_report)
        try:
            yield RunningCoordinator(app, runs, done)
        finally:
            await app.close()


@dataclass
class Captured:
    messages: list[dict[str, Any]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        async def enough() -> None:
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.messages


@asynccontextmanager
async def listening(
    connection: AbstractConnection, exchange: str, routing_key: str = "#"
) -> AsyncIterator[Captured]:
    """Bind a temporary queue to ``exchange`` and capture every JSON body that arrives."""
    captured = Captured()
    async with AsyncExitStack() as stack:
        channel = await connection.channel()
        stack.push_async_callback(channel.close)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key)

        async def on_message(message: AbstractIncomingMessage) -> None:
            captured.messages.append(json.loads(message.body))
            captured.properties.append(
                {"message_id": message.message_id, "delivery_mode": message.delivery_mode}
            )
            captured.arrived.set()

        await queue.consume(on_message, no_ack=True)
        yield captured


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail with the timeout otherwise. Never asserts a duration."""

    async def loop() -> None:
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


def record(
    account: str, resource: str, metric: str, quantity: str, unit: str, kind: str = "vm"
) -> UsageRecord:
    return UsageRecord(
        account_id=account,
        resource_id=resource,
        resource_type=kind,
        metric=metric,
        quantity=Decimal(quantity),
        unit=unit,
    )


@dataclass
class JsonLog:
    """The lines ``RECKON_LOG_FORMAT=json`` wrote while ``json_logs`` captured, each parsed."""

    stream: io.StringIO

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, *loggers: str) -> list[dict[str, Any]]:
        """The records of these loggers."""
        return [line for line in self.records if line.get("logger") in loggers]


@contextmanager
def json_logs(logger: str = "reckon", level: int = logging.INFO) -> Iterator[JsonLog]:
    """Render what ``logger`` and its children log at ``level`` and above with the JSON formatter
    the processes use (bound fields and the current trace id included), as a process would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    target = logging.getLogger(logger)
    before = target.level
    target.addHandler(handler)
    target.setLevel(level)
    try:
        yield JsonLog(stream)
    finally:
        target.removeHandler(handler)
        target.setLevel(before)
