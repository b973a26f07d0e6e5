"""Two coordinators on one store, every write slower than the lease (SQLite and PostgreSQL): the
builder keeps its report to the end, the other never resumes it, and no lease is said to be lost.

The store is made slow on purpose: each batch of chunks and each window of invoices spends longer
inside its transaction than the whole lease lasts (issue 16's "a window that takes longer than the
lease"). Only the renewal as each write commits keeps the report its builder's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from accounting.store import schema
from contracts import Period, Topology
from tests.integration.support import StaticService, coordinator, record, serving
from tests.store.support import slow_inserts

pytestmark = pytest.mark.integration

LEASE_SECONDS = 3.0
"""The shortest lease the settings allow; the keeper renews every second."""
SLOW_WRITE = 2 * LEASE_SECONDS
"""Long enough that even a keeper's renewal queued behind the write has run out when it lands."""
ACCOUNTS = 20


@pytest.fixture
def slow_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch of records and each window of invoices takes ``SLOW_WRITE`` seconds to store."""
    slow_inserts(monkeypatch, SLOW_WRITE, schema.outbox, schema.usage_records)


@pytest.mark.usefixtures("slow_writes")
async def test_writes_longer_than_the_lease_keep_the_report_its_builders(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    both_stores: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    compute = StaticService(
        "compute", [record(f"acct-{n:02d}", "vm-1", "vcpu", "3600", "vCPU-second") for n in range(ACCOUNTS)]
    )
    overrides: dict[str, Any] = {
        "lease_seconds": LEASE_SECONDS,
        "resume_every_seconds": 0.3,
        "pricing_page_records": ACCOUNTS,  # one window of invoices
        "pricing_processes": 0,
    }
    with caplog.at_level(logging.DEBUG, logger="reckon.lease"):
        async with (
            serving(connection, topology, compute, chunk_size=ACCOUNTS),
            coordinator(
                amqp_url, topology, ["compute"], store_url=both_stores, deadline_seconds=60, **overrides
            ) as a,
            coordinator(
                amqp_url, topology, ["compute"], store_url=both_stores, deadline_seconds=60, **overrides
            ) as b,
        ):
            run = await a.run_period(Period.month("2026-10"))
            await a.wait_until(run, ReportStatus.COMPLETED, timeout=45)
            invoices_stored = await a.app.store.invoices(report_id=run.key.report_id)

    assert isinstance(run.outcome, Completed), run.history
    assert len(compute.calls) == 1
    assert b.runs == []  # the other coordinator never resumed it
    assert not any("resumed" in transition.reason for transition in run.history.transitions)
    assert len(invoices_stored) == ACCOUNTS
    # Not even "no lease to renew": the keeper stopped before the write that finished the report.
    assert [r.getMessage() for r in caplog.records if r.name == "reckon.lease"] == []
