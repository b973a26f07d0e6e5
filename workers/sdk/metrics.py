"""A sub-service's Prometheus metrics (prometheus-client's default registry, on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "reckon_worker_requests",
    "Usage requests taken, by outcome: answered (every reply confirmed, then acknowledged), refused "
    "(dead-lettered), expired (deadline passed in the queue), failed (given back to the queue)",
    ["service", "outcome"],
)
ANSWER_SECONDS = Histogram(
    "reckon_worker_answer_seconds",
    "From a request taken to its last reply confirmed",
    ["service"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
RECORDS_SENT = Counter("reckon_worker_records_sent", "Usage records sent in answers", ["service"])
IN_FLIGHT = Gauge("reckon_worker_requests_in_flight", "Requests being answered now", ["service"])
