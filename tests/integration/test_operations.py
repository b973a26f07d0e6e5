"""The operations endpoints against the real broker: a coordinator's and a worker's /healthz,
/readyz (ready, and not ready with the reason) and /metrics after real reports; and the W3C trace
context carried from PeriodClosed to the UsageRequests, the replies and the invoices."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from accounting.amqp.scheduler import close_period
from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Aborted
from accounting.runtime.ops import DeadLetterCount, watch_coordinator
from contracts import CONTENT_TYPE, Period, Topology, UsageReply, UsageRequest
from observability import tracing
from observability.http import HttpSettings, OpsServer
from tests.integration.support import (
    JsonLog,
    StaticService,
    coordinator,
    eventually,
    json_logs,
    raw_service,
    record,
    serving,
)
from workers.sdk import WorkerSettings, serve

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")
ACCOUNTS = ("acct-1", "acct-2", "acct-3")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def ops_server() -> AsyncIterator[OpsServer]:
    server = OpsServer()
    await server.start(HttpSettings(0, "127.0.0.1"))  # RECKON_HTTP_PORT=0: any free port
    try:
        yield server
    finally:
        await server.stop()


async def get(server: OpsServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        return response.status, await response.text()


async def readyz(server: OpsServer) -> tuple[int, dict[str, Any]]:
    status, body = await get(server, "/readyz")
    return status, json.loads(body)


async def ready(server: OpsServer) -> bool:
    return (await readyz(server))[0] == 200


async def scrape(server: OpsServer) -> Samples:
    status, text = await get(server, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def gained(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@asynccontextmanager
async def capturing(
    connection: AbstractConnection, exchange: str, routing_key: str = "#"
) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """Every message published to ``exchange``, with its headers."""
    messages: list[AbstractIncomingMessage] = []
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key)

    async def keep(message: AbstractIncomingMessage) -> None:
        messages.append(message)

    await queue.consume(keep, no_ack=True)
    try:
        yield messages
    finally:
        await channel.close()


def answers(logged: JsonLog) -> list[dict[str, Any]]:
    """The worker's line for each answer it sent."""
    return [line for line in logged.of("reckon.worker") if "chunks" in line]


def compute() -> StaticService:
    return StaticService(
        "compute", [record(account, f"vm-{account}", "vcpu", "36000", "vCPU-second") for account in ACCOUNTS]
    )


async def test_a_coordinator_is_ready_once_started_and_counts_a_completed_report(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with ops_server() as server:
        assert (await get(server, "/healthz"))[0] == 200
        assert await readyz(server) == (503, {"status": "not ready", "checks": {"startup": "starting"}})
        async with (
            serving(connection, topology, compute()),
            coordinator(amqp_url, topology, ["compute"]) as running,
        ):
            dead_letters = watch_coordinator(server, running.app)
            await eventually(lambda: ready(server), timeout=15)
            assert (await readyz(server))[1]["checks"] == dict.fromkeys(
                ("broker", "store", "period_consumer", "relay", "resume"), "ok"
            )
            before = await scrape(server)
            async with (
                capturing(connection, topology.invoices.name) as invoices,
                capturing(connection, topology.usage.name, "compute") as requests,  # a copy of each
            ):
                with json_logs() as logged:
                    await close_period(connection, topology, PERIOD, requested_by="test")  # as the scheduler
                    run = await running.next_run()
                    await running.wait_until(run, ReportStatus.COMPLETED)
                    await eventually(lambda: len(invoices) == len(ACCOUNTS), timeout=15)
                    await eventually(lambda: bool(logged.of("reckon.relay") and answers(logged)), timeout=15)
            after = await scrape(server)

            # Every line about the report — its build, its pricing, the relay's "completed" — and the
            # worker's answer carry the report's id and trace id as fields.
            report = run.key.report_id
            lines = [
                line
                for line in logged.of("reckon.coordinator", "reckon.pricer", "reckon.relay")
                if str(line["event"]).startswith(f"report {report}")
            ]
            assert {line["logger"] for line in lines} == {
                "reckon.coordinator",
                "reckon.pricer",
                "reckon.relay",
            }
            assert all((line["report_id"], line["trace_id"]) == (str(report), report.hex) for line in lines)
            [completed] = logged.of("reckon.relay")
            assert completed["event"] == f"report {report} completed: every event confirmed"
            [answer] = answers(logged)
            assert (answer["service"], answer["records"], answer["chunks"]) == ("compute", len(ACCOUNTS), 1)
            assert (answer["report_id"], answer["trace_id"]) == (str(report), report.hex)

            # The request and every invoice carry the report's trace: derived from its id, as the
            # scheduler started it with PeriodClosed; each message is a span of its own.
            traces = [tracing.from_headers(message.headers) for message in [*requests, *invoices]]
            assert len(requests) == 1 and all(context is not None for context in traces)
            assert {context.trace_id for context in traces if context is not None} == {run.key.report_id.hex}
            assert len({context.parent_id for context in traces if context is not None}) == len(traces)

            assert gained(before, after, "reckon_reports_total", outcome="completed", code="") == 1
            assert (
                gained(before, after, "reckon_service_reply_seconds_count", service="compute", outcome="ok")
                == 1
            )
            assert gained(before, after, "reckon_service_records_total", service="compute") == len(ACCOUNTS)
            assert gained(before, after, "reckon_events_published_total", type="InvoiceIssued") == len(
                ACCOUNTS
            )
            assert gained(before, after, "reckon_events_published_total", type="ReportCompleted") == 1
            assert not [name for name, _ in after if name.startswith("reckon_invoices_published")]
            assert gained(before, after, "reckon_relay_lag_seconds_count") == len(ACCOUNTS) + 1
            assert value(after, "reckon_outbox_pending") == 0
            assert value(after, "reckon_outbox_oldest_pending_age_seconds") == 0
            assert value(after, "reckon_dead_letters") == 0
            assert value(after, "reckon_reports_awaiting_approval") == 0
            completed_at = value(after, "reckon_report_last_completed_timestamp_seconds", outcome="completed")
            assert 0 <= time.time() - completed_at < 60
            assert {dict(labels)["task"] for name, labels in after if name == "reckon_task_failures"} == {
                "relay",
                "resume",
                "period_consumer",
            }
            assert value(after, "reckon_task_failures", task="relay") == 0

            # The relay and the take-over loop stop (as when stalled for good): not ready, and why.
            running.app._stop.set()
            await eventually(lambda: not running.app.relay.health.running, timeout=15)
            status, body = await readyz(server)
            assert status == 503 and body["status"] == "not ready"
            assert body["checks"]["relay"] == "not running"
            assert body["checks"]["broker"] == "ok"
            await dead_letters.close()


async def test_an_invalid_reply_is_counted_as_rejected_and_the_report_as_aborted(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with (
        ops_server() as server,
        raw_service(connection, topology, "compute", lambda _request: [b"not json"]),
        coordinator(amqp_url, topology, ["compute"]) as running,
    ):
        dead_letters = watch_coordinator(server, running.app)
        before = await scrape(server)
        run = await running.run_period(PERIOD)
        after = await scrape(server)
        await dead_letters.close()
    assert isinstance(run.outcome, Aborted)
    assert run.outcome.report.reasons[0].code.value == "invalid_reply"
    assert gained(before, after, "reckon_replies_rejected_total", reason="invalid_reply") == 1
    assert gained(before, after, "reckon_reports_total", outcome="aborted", code="invalid_reply") == 1
    assert (
        gained(before, after, "reckon_report_abort_reasons_total", code="invalid_reply", service="compute")
        == 1
    )
    assert (
        gained(before, after, "reckon_service_reply_seconds_count", service="compute", outcome="failed") == 1
    )


async def test_a_worker_is_ready_while_consuming_and_echoes_the_trace_on_its_replies(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    echo = StaticService(
        "echo", [record(f"acct-{n}", f"vm-{n}", "vcpu", "60", "vCPU-second") for n in range(5)]
    )
    settings = WorkerSettings(amqp_url=amqp_url, namespace=topology.namespace, chunk_size=2)
    stop = asyncio.Event()
    sent = tracing.TraceContext.new()
    async with ops_server() as server:
        assert (await readyz(server))[0] == 503
        with json_logs() as logged:
            worker = asyncio.create_task(serve(echo, settings, stop, server))
            try:
                await eventually(lambda: ready(server), timeout=15)
                assert (await readyz(server))[1]["checks"] == {"broker": "ok", "consuming": "ok"}
                before = await scrape(server)

                channel = await connection.channel(publisher_confirms=True)
                replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
                request = UsageRequest(
                    request_id=uuid.uuid4().hex,
                    report_id=uuid.uuid4(),
                    period=PERIOD,
                    service="echo",
                    deadline=datetime.now(UTC) + timedelta(seconds=30),
                )
                exchange = await channel.get_exchange(topology.usage.name)
                await exchange.publish(
                    aio_pika.Message(
                        request.to_json(),
                        content_type=CONTENT_TYPE,
                        correlation_id=request.request_id,
                        reply_to=replies.name,
                        user_id="guest",
                        headers=sent.headers(),
                    ),
                    routing_key="echo",
                    mandatory=True,
                )
                received: list[AbstractIncomingMessage] = []
                async with asyncio.timeout(15), replies.iterator() as messages:
                    async for message in messages:
                        await message.ack()
                        received.append(message)
                        if UsageReply.from_json(message.body).chunk.last:
                            break
                await channel.close()

                echoed = {tracing.from_headers(message.headers) for message in received}
                assert len(received) == 3 and len(echoed) == 1  # one span for the whole answer
                [context] = echoed
                assert context is not None and context.trace_id == sent.trace_id
                assert context.parent_id != sent.parent_id

                # Once the answer is sent (every reply confirmed, the request acknowledged): one line.
                await eventually(lambda: bool(answers(logged)), timeout=15)
                [answered] = answers(logged)
                assert answered["level"] == "info"
                assert answered["event"].startswith(f"service echo: request {request.request_id} answered: ")
                assert {
                    key: answered[key] for key in ("request_id", "service", "records", "chunks", "outcome")
                } == {
                    "request_id": request.request_id,
                    "service": "echo",
                    "records": 5,
                    "chunks": 3,
                    "outcome": "ok",
                }
                assert isinstance(answered["seconds"], float) and answered["seconds"] >= 0
                assert (answered["trace_id"], answered["report_id"]) == (
                    sent.trace_id,
                    str(request.report_id),
                )

                after = await scrape(server)
                assert (
                    gained(before, after, "reckon_worker_requests_total", service="echo", outcome="answered")
                    == 1
                )
                assert gained(before, after, "reckon_worker_records_sent_total", service="echo") == 5
                assert gained(before, after, "reckon_worker_answer_seconds_count", service="echo") == 1
            finally:
                stop.set()
                await asyncio.wait_for(worker, 30)
        assert await readyz(server) == (503, {"status": "not ready", "checks": {"shutdown": "stopping"}})


async def test_the_dead_letter_gauge_follows_the_queue_from_one_scrape_to_the_next(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    """A robust channel answers a repeated passive declare from its cache: the gauge must not."""
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    counter = DeadLetterCount(connection, topology)
    try:
        await counter.refresh()
        before = REGISTRY.get_sample_value("reckon_dead_letters")
        async with connection.channel() as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key=topology.dead_letters_queue.name
            )

        async def counted() -> bool:
            await counter.refresh()
            return REGISTRY.get_sample_value("reckon_dead_letters") == (before or 0) + 1

        await eventually(counted, timeout=15)
    finally:
        await counter.close()
