"""``reckon reports / invoices / outbox`` as a user runs them, on a store holding real reports.

The store is built once for the module by the in-process coordinator on the real broker: period
2026-10 completed, period 2026-09 aborted because the configured service "ghost" is not running.
The commands then run as processes pointed at a broker that does not answer: inspecting the
store never needs RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from accounting.amqp.topology import delete_namespace
from accounting.core.lifecycle import ReportStatus
from contracts import Period, Topology, invoice_id, report_id
from tests.integration.support import StaticService, coordinator, eventually, record, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEAD_BROKER = "amqp://guest:secret@127.0.0.1:1/"
SERVICES = ("compute", "storage", "ghost")


async def build_store(amqp_url: str, topology: Topology, store_url: str) -> None:
    """2026-10: compute and storage answer, 2 invoices; 2026-09: "ghost" is unroutable."""
    compute = StaticService(
        "compute",
        [
            record("acct-a", "vm-a", "vcpu", "36000", "vCPU-second"),  # 10 vCPU-hours: 0.32
            record("acct-b", "vm-b", "vcpu", "360000", "vCPU-second"),  # 100 vCPU-hours: 3.20
        ],
    )
    storage = StaticService(
        "storage",
        [record("acct-a", "bkt-a", "object_storage", "100", "GB-month", kind="bucket")],  # 2.30
    )
    connection = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with connection, serving(connection, topology, compute, storage):
        async with coordinator(
            amqp_url, topology, ["compute", "storage"], consume=False, store_url=store_url
        ) as running:
            completed = await running.run_period(Period.month("2026-10"))
            await running.wait_until(completed, ReportStatus.COMPLETED)
        # "ghost" first: its returned request settles the report before compute is asked.
        async with coordinator(
            amqp_url, topology, ["ghost", "compute"], consume=False, store_url=store_url
        ) as running:
            await running.run_period(Period.month("2026-09"))

            async def drained() -> bool:
                return (await running.app.store.outbox_counts()).pending == 0

            await eventually(drained, timeout=15)


@pytest.fixture(scope="module")
def store_url(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The store, built in its own broker namespace, deleted afterwards."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('inspect')}/reckon.sqlite3"
    topology = Topology(f"test-{uuid.uuid4().hex[:10]}")
    try:
        asyncio.run(build_store(amqp_url, topology, url))
        yield url
    finally:
        asyncio.run(delete_namespace(amqp_url, topology, SERVICES))


def reckon(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accounting.cli", *args],
        cwd=ROOT,
        env={**os.environ, "RECKON_STORE_URL": store_url, "AMQP_URL": DEAD_BROKER, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def reckon_json(store_url: str, *args: str) -> Any:
    result = reckon(store_url, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


INVOICE_A = str(invoice_id("acct-a", "2026-10", 1))


def test_reports_list_json_gives_each_period_with_status_revision_and_total(store_url: str) -> None:
    reports = reckon_json(store_url, "reports", "list")

    assert [
        (report["period"], report["revision"], report["status"], report["total"], report["currency"])
        for report in reports
    ] == [
        ("2026-09", 1, "aborted", None, None),
        ("2026-10", 1, "completed", "5.82", "EUR"),
    ]
    assert [report["report_id"] for report in reports] == [
        str(report_id("2026-09", 1)),
        str(report_id("2026-10", 1)),
    ]


def test_reports_list_prints_a_table_of_periods_and_statuses(store_url: str) -> None:
    result = reckon(store_url, "reports", "list")

    assert result.returncode == 0, result.stderr
    assert "2026-09" in result.stdout
    assert "aborted" in result.stdout
    assert "2026-10" in result.stdout
    assert "completed" in result.stdout
    assert "5.82 EUR" in result.stdout


def test_reports_show_json_of_an_aborted_period_names_the_unroutable_service(store_url: str) -> None:
    detail = reckon_json(store_url, "reports", "show", "2026-09")

    assert [step["status"] for step in detail["history"]] == ["pending", "gathering", "aborted"]
    services = {service["service"]: service for service in detail["services"]}
    assert list(services) == ["ghost", "compute"]
    assert (services["ghost"]["state"], services["ghost"]["reason_code"]) == ("failed", "unroutable")
    assert "service 'ghost' is configured but not running" in services["ghost"]["reason"]
    # asked at the same time, it answered, and its answer is kept for a replay of ghost
    assert (services["compute"]["state"], services["compute"]["records"]) == ("ok", 2)
    assert (detail["records"], detail["invoices"], detail["total"]) == (2, 0, None)


def test_reports_show_json_of_a_completed_period_counts_records_per_service(store_url: str) -> None:
    detail = reckon_json(store_url, "reports", "show", "2026-10")

    assert [(service["service"], service["state"], service["records"]) for service in detail["services"]] == [
        ("compute", "ok", 2),
        ("storage", "ok", 1),
    ]
    assert (detail["records"], detail["invoices"], detail["total"]) == (3, 2, "5.82")
    assert detail["history"][-1]["status"] == "completed"


def test_reports_show_prints_the_services_and_the_history(store_url: str) -> None:
    result = reckon(store_url, "reports", "show", "2026-10")

    assert result.returncode == 0, result.stderr
    assert re.search(r"│ compute │ ok +│ +2 │", result.stdout)
    assert re.search(r"│ storage │ ok +│ +1 │", result.stdout)
    words = " ".join(result.stdout.split())  # Rich wraps the title to the table's width
    assert re.search(
        r"Report 2026-10 rev 1: COMPLETED \(3 records, 2 invoices, total 5\.82 EUR, "
        r"rate card sha256:[0-9a-f]{16}",  # the title may wrap inside the 64 hex digits
        words,
    )
    assert "Status history" in words
    assert "every invoice and the report event confirmed" in words


def test_reports_show_of_a_period_without_a_report_exits_2_saying_so(store_url: str) -> None:
    result = reckon(store_url, "reports", "show", "2031-01")

    assert result.returncode == 2
    assert "error: no report for period 2031-01" in result.stderr
    assert "Traceback" not in result.stderr


def test_reports_show_of_a_missing_revision_exits_2_naming_the_revision(store_url: str) -> None:
    result = reckon(store_url, "reports", "show", "2026-10", "--revision", "2")

    assert result.returncode == 2
    assert "error: no report for period 2026-10 revision 2" in result.stderr


def test_reports_show_refuses_a_revision_below_one(store_url: str) -> None:
    result = reckon(store_url, "reports", "show", "2026-10", "--revision", "0")

    assert result.returncode == 2
    assert "--revision" in result.stderr
    assert "Traceback" not in result.stderr


def test_invoices_show_json_gives_the_invoice_with_its_lines(store_url: str) -> None:
    [invoice] = reckon_json(store_url, "invoices", "show", INVOICE_A)

    assert (invoice["invoice_id"], invoice["account_id"], invoice["revision"]) == (INVOICE_A, "acct-a", 1)
    assert [(line["item"], line["quantity"], line["amount"]) for line in invoice["lines"]] == [
        ("object_storage", "100.000000", "2.30"),
        ("vcpu", "10.000000", "0.32"),
    ]
    assert Decimal(invoice["total"]) == Decimal("2.62")


def test_invoices_show_of_a_period_lists_every_invoice(store_url: str) -> None:
    result = reckon(store_url, "invoices", "show", "--period", "2026-10")

    assert result.returncode == 0, result.stderr
    assert "Invoices of 2026-10" in result.stdout
    assert "acct-a" in result.stdout
    assert "2.62 EUR" in result.stdout
    assert "acct-b" in result.stdout
    assert "3.20 EUR" in result.stdout
    assert "5.82 EUR" in result.stdout


def test_invoices_show_of_something_not_an_id_exits_2_naming_it(store_url: str) -> None:
    result = reckon(store_url, "invoices", "show", "not-a-uuid")

    assert result.returncode == 2
    assert "'not-a-uuid' is not an invoice id" in result.stderr
    assert "Traceback" not in result.stderr


def test_outbox_json_counts_every_invoice_and_both_report_events_as_sent(store_url: str) -> None:
    assert reckon_json(store_url, "outbox") == {
        "pending": 0,
        "sent": 4,
        "staged": 0,
        "oldest_pending_at": None,
        "oldest_pending_seconds": None,
        "last_error": None,
        "last_error_message_id": None,
    }


def test_inspecting_a_store_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "reckon.sqlite3"
    result = reckon(f"sqlite+aiosqlite:///{missing}", "reports", "list")

    assert result.returncode == 2
    assert f"no store at {missing}" in result.stderr
    assert not missing.parent.exists()
