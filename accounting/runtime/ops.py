"""Operating the accounting processes: what ``/readyz`` checks and what ``/metrics`` reads at
scrape time, for the coordinator and the standalone relay.

The server itself is ``observability.http``; the metrics are in ``accounting.infra.metrics``.
A check's reason is short and never an exception's text (a broker's or a database's error message
can carry a URL, and ``/readyz`` answers whoever reaches the port): at most the error's type. The
error itself is in the log (the supervisor logs each failure; the server a check that raises).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aio_pika.abc import AbstractConnection
from sqlalchemy import text

from accounting.core.lifecycle import ReportStatus
from accounting.infra import metrics
from accounting.infra.supervisor import TaskHealth
from accounting.runtime.app import CoordinatorApp
from accounting.service.relay import OutboxRelay
from accounting.store.repository import ReportStore
from contracts import Topology
from observability.http import Check, OpsServer
from transport.connection import connected_check
from transport.queues import QueueProbe

log = logging.getLogger("reckon.ops")


def store_check(store: ReportStore) -> Check:
    """None while ``SELECT 1`` answers; a failure raises, and the server shows only its type and
    logs it (once per change)."""

    async def reachable() -> str | None:
        async with store.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return None

    return reachable


def error_kind(last_error: str | None) -> str:
    """The type of a ``TaskHealth.last_error`` (``"OSError: ..."`` → ``"OSError"``), its text left out."""
    kind = (last_error or "").partition(": ")[0].strip()
    return kind if kind.isidentifier() else "error"


def task_check(health: TaskHealth) -> Check:
    """A supervised task is ready while it runs and its last round did not fail. For the relay,
    "stalled" means exactly that: not running, or failing (the broker or the store refusing)."""

    async def task() -> str | None:
        if not health.running:
            return "not running"
        if health.failures:
            return f"failing ({health.failures} in a row): {error_kind(health.last_error)}"
        return None

    return task


def coordinator_checks(app: CoordinatorApp) -> dict[str, Check]:
    """Broker connected, its queues declared and PeriodClosed consumed, store reachable, relay
    (when this coordinator relays) and the take-over loop not failing."""
    checks: dict[str, Check] = {"broker": connected_check(app.connection), "store": store_check(app.store)}

    async def period_consumer() -> str | None:
        if app.consumer is None:
            return "not consuming accounting.period-closed"
        if app.consumer.closed:
            return "its channel is closed (reopening)"
        return await task_check(app.period_consumer)()

    if app.consumer is not None:
        checks["period_consumer"] = period_consumer
    if app.settings.relay:
        checks["relay"] = task_check(app.relay.health)
    checks["resume"] = task_check(app.resumer)
    return checks


def relay_checks(connection: AbstractConnection, store: ReportStore, relay: OutboxRelay) -> dict[str, Check]:
    return {
        "broker": connected_check(connection),
        "store": store_check(store),
        "relay": task_check(relay.health),
    }


async def stopping() -> str:
    return "stopping"


OUTCOMES = {ReportStatus.COMPLETED: "completed", ReportStatus.ABORTED: "aborted"}
"""The ``outcome`` label of ``reckon_report_last_completed_timestamp_seconds``, by final status."""


def watch_outbox(server: OpsServer, store: ReportStore, tasks: Sequence[TaskHealth]) -> None:
    """At each scrape: the outbox backlog and how long its oldest ready row has waited since it was
    made ready, when the newest report completed and aborted and how many drafts wait (read from
    the store, so the coordinator and the standalone relay both show them), and each task's
    failures."""

    async def outbox() -> None:
        status = await store.outbox_status()
        metrics.OUTBOX_PENDING.set(status.pending)
        metrics.OUTBOX_STAGED.set(status.staged)
        oldest = status.oldest_pending_at
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        metrics.OUTBOX_OLDEST_AGE.set(age)

    async def reports() -> None:
        status = await store.reports_status()
        for final, outcome in OUTCOMES.items():
            at = status.last_final_at.get(final)
            if at is not None:  # an outcome no report reached yet has no series
                metrics.REPORT_LAST_FINISHED.labels(outcome).set(_unix(at))
        metrics.REPORTS_AWAITING_APPROVAL.set(status.awaiting_approval)

    async def supervised() -> None:
        for health in tasks:
            metrics.TASK_FAILURES.labels(health.name).set(health.failures)

    server.before_scrape("outbox", outbox)
    server.before_scrape("reports", reports)
    server.before_scrape("tasks", supervised)


def _unix(at: datetime) -> float:
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


class DeadLetterCount:
    """The dead-letter queue's message count, looked up on a channel of its own at each scrape."""

    def __init__(self, connection: AbstractConnection, topology: Topology) -> None:
        self._probe = QueueProbe(connection)
        self._queue = topology.dead_letters_queue.name

    async def refresh(self) -> None:
        queue = await self._probe.look(self._queue)
        if queue is None:
            raise LookupError(f"queue {self._queue} does not exist")
        metrics.DEAD_LETTERS.set(queue.declaration_result.message_count or 0)

    async def close(self) -> None:
        await self._probe.close()


def watch_coordinator(server: OpsServer, app: CoordinatorApp) -> DeadLetterCount:
    """Readiness and scrape-time metrics of a running coordinator; close the returned counter
    when the coordinator stops."""
    server.set_checks(coordinator_checks(app))
    watch_outbox(server, app.store, app.health)
    dead_letters = DeadLetterCount(app.connection, Topology(app.settings.namespace))
    server.before_scrape("dead_letters", dead_letters.refresh)
    return dead_letters
