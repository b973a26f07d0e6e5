"""The coordinator's and the relay's Prometheus metrics (prometheus-client's default registry,
served on ``/metrics`` by ``observability.http``). Counters and histograms only count what this
process did; the outbox, report and dead-letter gauges are set at scrape time
(``accounting.runtime.ops``) from the store and the broker, so every replica shows the same values."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from accounting.core.gather import Gather
from accounting.core.gather_answers import ServiceState
from accounting.core.report import Aborted, ReportOutcome

Snapshot = tuple[dict[str, int], dict[str, ServiceState]]

REPORTS = Counter(
    "reckon_reports",
    "Reports finished by this process: completed (every event confirmed, by the relay) or aborted, "
    "with the code of the first reason",
    ["outcome", "code"],
)
ABORT_REASONS = Counter(
    "reckon_report_abort_reasons",
    "Every reason of every aborted report, by code and service",
    ["code", "service"],
)
REPLY_SECONDS = Histogram(
    "reckon_service_reply_seconds",
    "From a UsageRequest sent to its service's answer settled (complete, or failed), by service",
    ["service", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
SERVICE_RECORDS = Counter(
    "reckon_service_records", "Usage records of complete answers, by service", ["service"]
)
REPLIES_REJECTED = Counter(
    "reckon_replies_rejected",
    "Reply chunks that did not count: ignored (late, duplicate, unknown_correlation, rejected_sender, "
    "superseded) or failing the service (invalid_reply, incomplete, service_error)",
    ["reason"],
)
PERIODS_REFUSED = Counter(
    "reckon_period_closed_refused",
    "PeriodClosed events refused and dead-lettered, by reason: invalid (not a PeriodClosed), "
    "sender (not from the scheduler's broker user) or calendar (a period not ended, or bounds "
    "that are not the billing calendar's)",
    ["reason"],
)
EVENTS_PUBLISHED = Counter(
    "reckon_events_published",
    "Outbox events published and confirmed, by message type (InvoiceIssued: the invoices sent)",
    ["type"],
)
RELAY_LAG = Histogram(
    "reckon_relay_lag_seconds",
    "From an outbox row made ready (its report issued) to its publish confirmed and marked sent",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)
OUTBOX_PENDING = Gauge("reckon_outbox_pending", "Outbox rows ready and not yet sent (the relay's backlog)")
OUTBOX_STAGED = Gauge("reckon_outbox_staged", "Invoices of reports still being priced: not relayable yet")
OUTBOX_OLDEST_AGE = Gauge(
    "reckon_outbox_oldest_pending_age_seconds",
    "How long the oldest ready and unsent outbox row has waited since it was made ready (0: none)",
)
REPORT_LAST_FINISHED = Gauge(
    "reckon_report_last_completed_timestamp_seconds",
    "Unix time of the newest report that reached its final status, by outcome (completed, aborted); "
    "read from the store",
    ["outcome"],
)
REPORTS_AWAITING_APPROVAL = Gauge(
    "reckon_reports_awaiting_approval", "Reports priced and waiting as drafts for a reviewer's decision"
)
DEAD_LETTERS = Gauge("reckon_dead_letters", "Messages in the dead-letter queue (billing.dead-letters)")
TASK_FAILURES = Gauge("reckon_task_failures", "Failures in a row of a supervised task (0: healthy)", ["task"])


def report_built(outcome: ReportOutcome) -> None:
    """A build ended: an aborted report is counted here (a completed one once the relay confirms
    its last event, ``report_completed``)."""
    if isinstance(outcome, Aborted):
        reasons = outcome.report.reasons
        REPORTS.labels("aborted", reasons[0].code.value if reasons else "").inc()
        for reason in reasons:
            ABORT_REASONS.labels(reason.code.value, reason.service or "").inc()


def report_completed() -> None:
    REPORTS.labels("completed", "").inc()


def published(message_types: Sequence[str]) -> None:
    for message_type, count in Tally(message_types).items():
        EVENTS_PUBLISHED.labels(message_type).inc(count)


def relayed(lags: Iterable[float]) -> None:
    """Observe each confirmed row's wait, from ready to sent (never below 0: clocks of two hosts)."""
    for lag in lags:
        RELAY_LAG.observe(max(0.0, lag))


def snapshot(machine: Gather) -> Snapshot:
    """What a gather had ignored and each service's state, before it handles a reply."""
    ignored = {str(reason): count for reason, count in machine.ignored.items()}
    return ignored, {name: outcome.state for name, outcome in machine.services.items()}


def reply_handled(machine: Gather, before: Snapshot) -> bool:
    """Count the reply the gather just handled if it did not count: ignored (by why), or failing
    its service (by the abort code: invalid_reply, incomplete, service_error). True when ignored."""
    ignored_before, states_before = before
    ignored = False
    for reason, count in machine.ignored.items():
        gained = count - ignored_before.get(str(reason), 0)
        if gained > 0:
            ignored = True
            REPLIES_REJECTED.labels(str(reason)).inc(gained)
    for name, outcome in machine.services.items():
        if (
            outcome.state is ServiceState.FAILED
            and states_before.get(name) is not ServiceState.FAILED
            and outcome.reason is not None
        ):
            REPLIES_REJECTED.labels(outcome.reason.code.value).inc()
    return ignored


def settled(machine: Gather, seen: set[str], elapsed: float) -> None:
    """Observe the latency (and records) of each service whose answer settled since last time."""
    for name, outcome in machine.services.items():
        if outcome.state is ServiceState.WAITING or name in seen:
            continue
        seen.add(name)
        REPLY_SECONDS.labels(name, outcome.state.value).observe(elapsed)
        if outcome.state is ServiceState.OK:
            SERVICE_RECORDS.labels(name).inc(outcome.records)
