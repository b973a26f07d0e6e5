"""Draft → approve, on the real broker: with ``approval = "manual"`` a priced report waits as a
draft and nothing reaches the payment exchange until ``reckon reports approve`` (run as its own
process) numbers and dates its invoices; ``reject`` aborts it with the reviewer's reason and a
replay builds the period again; ``auto_approve_after`` approves a draft nobody decided on."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from accounting.runtime.settings import Settings
from accounting.service.replay import replay
from contracts import Period, Topology
from tests.integration.support import StaticService, coordinator, listening, serving
from tests.integration.test_corrections import command_json, declared, vcpu_hours

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")


async def reckon(settings: Settings, *arguments: str) -> tuple[int, str, str]:
    """A ``reckon`` command on the coordinator's store, in a process of its own."""
    environment = {**os.environ, "RECKON_STORE_URL": settings.store_url, "COLUMNS": "200"}
    environment.pop("RECKON_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", *arguments,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"


async def test_a_draft_sends_nothing_until_approved_then_goes_out_numbered_and_dated(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name) as sent,
        listening(connection, topology.reports.name) as reports,
        coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url, approval="manual"
        ) as running,
    ):
        run = await running.run_period(PERIOD)
        assert isinstance(run.outcome, Completed)
        assert await running.status(run) is ReportStatus.DRAFT
        await asyncio.sleep(1.0)  # five relay polls: a draft's rows must not be among them
        assert (sent.messages, reports.messages) == ([], [])
        diff = await command_json(running.app.settings, tmp_path, "reports", "diff", "2026-10", "--json")
        assert (diff["status"], diff["new_accounts"]["count"], diff["total"]["now"]) == ("draft", 2, "32.32")

        approved = await command_json(
            running.app.settings, tmp_path, "reports", "approve", "2026-10", "--by", "alice", "--json"
        )
        invoices = await sent.wait_for(2)
        await reports.wait_for(1)
        await running.wait_until(run, ReportStatus.COMPLETED)

    assert (approved["approved_by"], approved["invoices"], approved["numbers"]) == (
        "alice",
        2,
        [{"first": "INV-2026-000001", "last": "INV-2026-000002"}],
    )
    assert [(i["account_id"], i["number"], i["schema_version"]) for i in invoices] == [
        ("acct-1", "INV-2026-000001", "2.1"),
        ("acct-2", "INV-2026-000002", "2.1"),
    ]
    issued_at = datetime.fromisoformat(invoices[0]["issued_at"])
    assert datetime.fromisoformat(invoices[0]["due_at"]) - issued_at == timedelta(days=30)
    assert reports.messages[0]["invoice_count"] == 2
    decisions = await running.app.store.approvals(run.key.report_id)
    assert [(d.decision, d.decided_by) for d in decisions] == [("approved", "alice")]


async def test_a_rejected_draft_is_aborted_with_its_reason_and_a_replay_builds_the_period_again(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000)])
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name) as sent,
        listening(connection, topology.reports.name, "report.aborted") as aborted,
        coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url, approval="manual"
        ) as running,
    ):
        first = await running.run_period(PERIOD)
        assert await running.status(first) is ReportStatus.DRAFT
        refused = await reckon(running.app.settings, "reports", "approve", "2026-10", "--revision", "7")
        rejected = await reckon(
            running.app.settings,
            "reports",
            "reject",
            "2026-10",
            "--by",
            "bob",
            "--reason",
            "compute usage looks 10x too high",
        )
        [event] = await aborted.wait_for(1)
        compute.records = [vcpu_hours("acct-1", 100)]
        second = await replay(running.app.coordinator, "2026-10")
        assert await running.status(second) is ReportStatus.DRAFT
        await running.app.store.approve(
            second.key.report_id, "bob", datetime.now().astimezone(), running.app.coordinator.numbering
        )
        [invoice] = await sent.wait_for(1)

    assert refused[0] == 2 and "period 2026-10 revision 7 has no report" in refused[2]
    assert rejected[0] == 0 and "rejected by bob" in rejected[1]
    assert await running.status(first) is ReportStatus.ABORTED
    assert [(r["code"], r["message"]) for r in event["reasons"]] == [
        ("rejected", "rejected by bob: compute usage looks 10x too high")
    ]
    assert (invoice["revision"], invoice["total"], invoice["number"]) == (2, "3.20", "INV-2026-000001")


async def test_a_draft_nobody_decides_on_is_approved_after_the_grace_window(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000)])
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name) as sent,
        coordinator(
            amqp_url,
            topology,
            ["compute"],
            consume=False,
            store_url=store_url,
            approval="manual",
            auto_approve_after_seconds=0.5,
            resume_every_seconds=0.2,
        ) as running,
    ):
        run = await running.run_period(PERIOD)
        [invoice] = await sent.wait_for(1, timeout=15)
        await running.wait_until(run, ReportStatus.COMPLETED)
        decisions = await running.app.store.approvals(run.key.report_id)

    assert invoice["number"] == "INV-2026-000001"
    assert [(d.decision, d.decided_by) for d in decisions] == [("approved", "auto_approve_after")]
