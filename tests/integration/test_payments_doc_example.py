"""docs/payments.md's example consumer, run as written (extracted from the page, plain aio-pika, no
Reckon import) against the real broker and a real coordinator: it takes the first invoices, drops a
copy and refuses a message not sent by the coordinator, then applies a correction (a credit note
and the corrected invoice), ending with each account owing what its newest invoice says."""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from accounting.service.replay import replay
from contracts import CONTENT_TYPE, Period, Topology, UsageRecord, invoice_id
from tests.integration.support import StaticService, coordinator, eventually, record, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "payments.md"
MARKER = "<!-- payments-example: the test extracts the code block below -->"
PERIOD = Period.month("2026-10")


def example_code() -> str:
    """The fenced Python block right after the marker in docs/payments.md."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)\n```", text, re.DOTALL)
    assert match is not None, f"{DOC} has no python block after {MARKER!r}"
    return match.group(1)


def load_example() -> ModuleType:
    """The example as a module (not as __main__: its main() is started by the test)."""
    module = ModuleType("payments_example")
    exec(compile(example_code(), str(DOC), "exec"), module.__dict__)
    return module


def vcpu_hours(account: str, hours: int) -> UsageRecord:
    """1,000 vCPU-hours cost 32.00 EUR on the test card."""
    return record(account, f"vm-{account}", "vcpu", str(hours * 3600), "vCPU-second")


def test_the_example_is_about_40_lines_and_imports_nothing_of_reckon() -> None:
    code = example_code()
    lines = [line for line in code.splitlines() if line.strip()]
    imported = set(re.findall(r"^(?:import|from) (\w+)", code, re.MULTILINE))

    assert len(lines) <= 50, len(lines)
    assert imported == {"asyncio", "json", "os", "decimal", "aio_pika"}
    compile(code, str(DOC), "exec")


async def test_the_docs_consumer_applies_invoices_once_from_the_coordinator_and_then_a_correction(
    amqp_url: str,
    connection: AbstractRobustConnection,
    topology: Topology,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    coordinator_user = urlsplit(amqp_url).username or "guest"
    monkeypatch.setenv("AMQP_URL", amqp_url)
    monkeypatch.setenv("RECKON_NAMESPACE", topology.namespace)
    monkeypatch.setenv("RECKON_COORDINATOR_USER", coordinator_user)
    example = load_example()
    handled: set[str] = example.handled
    balances: dict[tuple[str, str], Decimal] = example.balances

    channel = await connection.channel()
    await declare_coordinator_topology(channel, topology)  # as the coordinator does before any invoice
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    consumer = asyncio.create_task(example.main())
    try:
        async with (
            serving(connection, topology, compute),
            coordinator(
                amqp_url,
                topology,
                ["compute"],
                consume=False,
                store_url=f"sqlite+aiosqlite:///{tmp_path}/r.db",
            ) as running,
        ):
            first = await running.run_period(PERIOD)
            assert isinstance(first.outcome, Completed)
            await running.wait_until(first, ReportStatus.COMPLETED)
            await eventually(lambda: len(handled) == 2, timeout=15)
            assert balances == {("acct-1", "EUR"): Decimal("32.00"), ("acct-2", "EUR"): Decimal("0.32")}

            # A copy of an invoice (as a re-send would be), then one signed by no broker user: the copy
            # is dropped, the other is dead-lettered. The queue is FIFO, so once the second is in the
            # dead letters the copy was handled.
            invoice = await running.app.store.invoices(report_id=first.key.report_id)
            body = invoice[0].to_json()
            exchange = await channel.get_exchange(topology.invoices.name)
            properties: dict[str, Any] = {"content_type": CONTENT_TYPE, "type": "InvoiceIssued"}
            copy_id = str(invoice[0].invoice_id)
            await exchange.publish(
                aio_pika.Message(body, message_id=copy_id, user_id=coordinator_user, **properties),
                "invoice.issued",
            )
            await exchange.publish(aio_pika.Message(body, message_id=copy_id, **properties), "invoice.issued")

            letters = await channel.get_queue(topology.dead_letters_queue.name)
            parked: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def dead_lettered() -> bool:
                # A quorum queue's declare-ok does not count reliably (RabbitMQ 3.x): take the letter.
                letter = await letters.get(no_ack=True, fail=False)
                if letter is not None:
                    parked.append(letter)
                return bool(parked)

            await eventually(dead_lettered, timeout=15)
            assert parked[0].user_id is None and parked[0].message_id == copy_id
            assert len(handled) == 2
            assert balances[("acct-1", "EUR")] == Decimal("32.00")

            # A forced replay with less usage for acct-1: a credit note for 32.00, then the corrected
            # invoice for 28.80; acct-2's charge is the same, so it gets nothing.
            compute.records = [vcpu_hours("acct-1", 900), vcpu_hours("acct-2", 10)]
            second = await replay(running.app.coordinator, PERIOD.period_id, force=True)
            await running.wait_until(second, ReportStatus.COMPLETED)
            await eventually(lambda: len(handled) == 4, timeout=15)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await channel.close()

    assert balances == {("acct-1", "EUR"): Decimal("28.80"), ("acct-2", "EUR"): Decimal("0.32")}
    assert str(invoice_id("acct-1", PERIOD.period_id, 2)) in handled
