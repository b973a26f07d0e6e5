"""The shared operations helpers: traceparent, JSON log lines, the HTTP endpoints' settings and
answers, and how the coordinator picks a report's trace."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import platform
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from importlib import metadata
from uuid import UUID, uuid4

import aiohttp
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accounting.amqp.publisher import _trace_headers
from accounting.infra import traces
from accounting.infra.supervisor import TaskHealth, supervise
from accounting.runtime.app import CoordinatorApp
from accounting.runtime.ops import task_check
from accounting.service.relay import OutboxRelay
from contracts import report_id
from observability import logs, tracing
from observability.build import build_version, register_build_info
from observability.http import SCRAPE_ERRORS, HttpSettings, OpsServer
from observability.tracing import TraceContext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


# --- traceparent -----------------------------------------------------------------------------


def test_a_traceparent_is_parsed_and_formatted_back() -> None:
    header = f"00-{TRACE}-{PARENT}-01"
    context = tracing.parse(header)
    assert context == TraceContext(TRACE, PARENT, 1)
    assert context.sampled
    assert context.header() == header
    assert tracing.parse(header.encode()) == context
    assert tracing.from_headers({"traceparent": header, "other": 1}) == context


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE.upper()}-{PARENT}-01",  # hex is lower case
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-1",
        b"\xff\xfe",
        42,
    ],
)
def test_an_invalid_traceparent_is_ignored(header: object) -> None:
    assert tracing.parse(header) is None


def test_a_later_version_is_read_for_its_first_four_fields() -> None:
    assert tracing.parse(f"01-{TRACE}-{PARENT}-00-what-comes-next") == TraceContext(TRACE, PARENT, 0)


def test_a_child_keeps_the_trace_and_flags_with_a_span_of_its_own() -> None:
    parent = TraceContext(TRACE, PARENT, 0)
    child = parent.child()
    assert (child.trace_id, child.flags) == (TRACE, 0)
    assert child.parent_id != PARENT and len(child.parent_id) == 16
    assert tracing.parse(child.header()) == child
    assert child.headers() == {"traceparent": child.header()}


def test_a_reports_trace_id_is_its_uuid_in_hex() -> None:
    report = report_id("2026-10", 1)
    assert tracing.trace_id_for(report) == report.hex == tracing.trace_id_for(str(report))
    assert TraceContext.for_report(report).trace_id == report.hex
    assert TraceContext.new().trace_id != TraceContext.new().trace_id
    with pytest.raises(ValueError, match="trace id"):
        TraceContext("0" * 32, PARENT)


async def test_the_current_trace_follows_the_task_and_the_tasks_it_starts() -> None:
    context = TraceContext(TRACE, PARENT)
    assert tracing.current() is None

    async def seen() -> TraceContext | None:
        await asyncio.sleep(0)
        return tracing.current()

    with tracing.traced(context):
        child = asyncio.create_task(seen())
        assert tracing.current() is context
    assert tracing.current() is None
    assert await child is context
    assert await asyncio.create_task(seen()) is None


def test_a_report_continues_a_foreign_trace_in_memory_and_derives_its_own_otherwise() -> None:
    foreign = TraceContext(TRACE, PARENT)
    report = uuid4()
    started = traces.report_trace(report, foreign)
    assert started.trace_id == TRACE and started.parent_id != PARENT
    assert traces.report_trace(report).trace_id == TRACE  # the relay, later, in this process

    other = uuid4()
    assert traces.report_trace(other).trace_id == other.hex  # nothing kept: derived
    own = TraceContext.for_report(other)
    traces.report_trace(other, own)  # the scheduler's own trace needs no memory
    assert other not in traces._traces


class Row:
    """What the relay hands the publisher: an outbox row names its report."""

    def __init__(self, report: UUID) -> None:
        self.report_id = report


def test_the_relays_events_carry_their_reports_trace() -> None:
    report = report_id("2026-11", 2)
    header = _trace_headers(Row(report))  # type: ignore[arg-type]
    context = tracing.from_headers(header)
    assert context is not None and context.trace_id == report.hex
    assert _trace_headers(object()) == {}  # type: ignore[arg-type]


# --- JSON logs -------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter(process="compute", service="compute"))
    logger = logging.getLogger("reckon.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_line_is_one_json_object_with_the_bound_context(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    report = uuid4()
    with (
        tracing.traced(TraceContext(TRACE, PARENT)),
        logs.bound(report_id=report, request_id="r1", none=None),
    ):
        logger.info("answered %s with %d records", "r1", 3)
    logger.warning("outside")

    inside, outside = lines(stream)
    assert inside["event"] == "answered r1 with 3 records"
    assert (inside["level"], inside["logger"]) == ("info", "reckon.test-json")
    assert (inside["process"], inside["service"]) == ("compute", "compute")
    assert (inside["report_id"], inside["request_id"], inside["trace_id"]) == (str(report), "r1", TRACE)
    assert "none" not in inside
    assert str(inside["timestamp"]).endswith("Z")
    assert outside["event"] == "outside" and outside["level"] == "warning"
    assert not {"report_id", "request_id", "trace_id"} & set(outside)


def test_a_bound_count_or_duration_stays_a_number_and_anything_else_becomes_text(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    with logs.bound(records=5, seconds=0.25, last=True, report_id=UUID(int=7)):
        logger.info("answered")
    [line] = lines(stream)
    assert (line["records"], line["seconds"], line["last"]) == (5, 0.25, True)
    assert line["report_id"] == str(UUID(int=7))


def test_a_report_context_binds_the_reports_id_and_trace_id() -> None:
    report = report_id("2026-10", 1)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter(process="relay"))
    logger = logging.getLogger("reckon.test-report-context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with traces.report_context(report, period_id="2026-10") as trace:
            logger.info("report %s completed", report)
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    inside, after = lines(stream)
    assert (inside["report_id"], inside["period_id"], inside["trace_id"]) == (
        str(report),
        "2026-10",
        report.hex,
    )
    assert trace.trace_id == report.hex
    assert not {"report_id", "period_id", "trace_id"} & set(after)


def test_an_exception_is_in_the_same_line(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    try:
        raise RuntimeError("store locked")
    except RuntimeError:
        logger.exception("relay failed")
    [line] = lines(stream)
    assert line["event"] == "relay failed"
    assert "RuntimeError: store locked" in str(line["exception"])


def test_the_log_format_is_text_unless_json_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    assert logs.log_format() == "text"
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, " JSON ")
    assert logs.log_format() == "json"
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="RECKON_LOG_FORMAT"):
        logs.log_format()


# --- the operations server -------------------------------------------------------------------


def test_the_port_comes_from_the_environment() -> None:
    assert HttpSettings.from_env({}) == HttpSettings(None)
    assert HttpSettings.from_env({"RECKON_HTTP_PORT": " "}).port is None
    assert HttpSettings.from_env({"RECKON_HTTP_PORT": "8080"}) == HttpSettings(8080, "0.0.0.0")
    assert HttpSettings.from_env({"RECKON_HTTP_PORT": "0", "RECKON_HTTP_HOST": "127.0.0.1"}) == HttpSettings(
        0, "127.0.0.1"
    )
    for bad in ("http", "-1", "65536"):
        with pytest.raises(ValueError, match="RECKON_HTTP_PORT"):
            HttpSettings.from_env({"RECKON_HTTP_PORT": bad})


@pytest.fixture
async def server() -> AsyncIterator[tuple[OpsServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    started = OpsServer(registry, timeout=0.5)
    await started.start(HttpSettings(0, "127.0.0.1"))
    yield started, registry
    await started.stop()


async def get(server: OpsServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        return response.status, await response.text()


async def test_alive_at_once_ready_only_once_every_check_passes(
    server: tuple[OpsServer, CollectorRegistry],
) -> None:
    ops, _ = server
    assert ops.port
    assert await get(ops, "/healthz") == (200, '{"status": "alive"}')
    status, body = await get(ops, "/readyz")
    assert (status, json.loads(body)) == (503, {"status": "not ready", "checks": {"startup": "starting"}})

    async def fine() -> str | None:
        return None

    async def down() -> str | None:
        return "not connected (reconnecting)"

    async def broken() -> str | None:
        raise OSError("database is locked")

    async def hangs() -> str | None:
        await asyncio.sleep(5)
        return None

    ops.set_checks({"store": fine, "broker": down, "relay": broken, "slow": hangs})
    status, body = await get(ops, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"] == {
        "store": "ok",
        "broker": "not connected (reconnecting)",
        "relay": "failed (OSError), see the log",  # never the raw text (it can carry a URL)
        "slow": "no answer within 0.5s",
    }
    ops.set_checks({"store": fine})
    status, body = await get(ops, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready", "checks": {"store": "ok"}})
    assert (await get(ops, "/nothing"))[0] == 404


async def test_metrics_are_refreshed_at_scrape_time_and_a_failing_read_is_counted(
    server: tuple[OpsServer, CollectorRegistry],
) -> None:
    ops, registry = server
    backlog = Gauge("test_backlog", "rows", registry=registry)
    reads = [0]

    async def count_backlog() -> None:
        reads[0] += 1
        backlog.set(7 * reads[0])

    async def unreachable() -> None:
        raise ConnectionError("broker gone")

    ops.before_scrape("backlog", count_backlog)
    ops.before_scrape("dead_letters", unreachable)
    failed_before = SCRAPE_ERRORS.labels("dead_letters")._value.get()
    async with aiohttp.ClientSession() as session, session.get(ops.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    assert "test_backlog 7.0" in text
    assert SCRAPE_ERRORS.labels("dead_letters")._value.get() == failed_before + 1


def test_build_info_is_one_series_set_to_1_and_registering_it_again_is_harmless() -> None:
    registry = CollectorRegistry()
    gauge = register_build_info(registry)
    assert register_build_info(registry) is gauge  # twice in one process (a test, a restart in place)

    [family] = text_string_to_metric_families(generate_latest(registry).decode())
    assert (family.name, family.type) == ("reckon_build_info", "gauge")
    assert [(sample.name, sample.labels, sample.value) for sample in family.samples] == [
        (
            "reckon_build_info",
            {"version": metadata.version("reckon"), "python": platform.python_version()},
            1.0,
        )
    ]

    register_build_info()  # the default registry, which /metrics serves
    register_build_info()
    labels = {"version": build_version(), "python": platform.python_version()}
    assert REGISTRY.get_sample_value("reckon_build_info", labels) == 1.0


def test_supervised_tasks_are_named_by_identifiers_the_task_label_can_carry() -> None:
    app_tasks = {
        field.name: field.default_factory().name  # type: ignore[operator]
        for field in dataclasses.fields(CoordinatorApp)
        if field.type == "TaskHealth"
    }
    relay = OutboxRelay(None, None, clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    assert app_tasks == {"resumer": "resume", "period_consumer": "period_consumer"}
    assert relay.health.name == "relay"
    assert all(name.isidentifier() for name in [*app_tasks.values(), relay.health.name])


async def test_a_failing_supervised_task_is_logged_with_its_name_as_a_field(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    _, stream = json_log
    handler = logging.getLogger("reckon.test-json").handlers[0]
    supervisor = logging.getLogger("reckon.supervisor")
    supervisor.addHandler(handler)
    stop = asyncio.Event()
    health = TaskHealth("relay")
    rounds = [0]

    async def body() -> None:
        rounds[0] += 1
        if rounds[0] == 1:
            raise ConnectionError("broker gone")
        stop.set()

    try:
        await supervise(health, body, stop, initial_backoff=0.01)
    finally:
        supervisor.removeHandler(handler)
    [line] = lines(stream)
    assert line["task"] == "relay" and line["level"] == "error"
    assert str(line["event"]).startswith("task relay failed (1 in a row): ConnectionError: broker gone")


async def test_a_stalled_task_is_not_ready_and_says_why() -> None:
    health = TaskHealth("relay")
    check = task_check(health)
    assert await check() == "not running"
    health.running = True
    assert await check() is None
    health.failed(ConnectionError("broker refused the channel"))
    assert await check() == "failing (1 in a row): ConnectionError"  # the type, never the raw text
    health.ok()
    assert await check() is None
