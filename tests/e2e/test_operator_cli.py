"""``reckon dlq …``, ``reckon payments --db`` and ``reckon close-period --last-month`` as an operator
(or a CronJob) runs them: real processes, the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.calendar import UTC_MONTHS
from accounting.dlq.queue import list_dead_letters
from contracts import CONTENT_TYPE, ROUTING_INVOICE_ISSUED, ROUTING_PERIOD_CLOSED, InvoiceIssued, Topology
from tests.integration.support import eventually, listening
from tests.invoices import sample_invoice

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def environment(amqp_url: str, topology: Topology) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": amqp_url, "RECKON_NAMESPACE": topology.namespace, "COLUMNS": "300"}


async def reckon(
    amqp_url: str, topology: Topology, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", *args,
        env=environment(amqp_url, topology), cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def publish_invoice(
    connection: AbstractRobustConnection,
    topology: Topology,
    invoice: InvoiceIssued | None = None,
    body: bytes = b"",
) -> None:
    async with connection.channel(publisher_confirms=True) as channel:
        await declare_coordinator_topology(channel, topology)
        exchange = await channel.get_exchange(topology.invoices.name)
        await exchange.publish(
            aio_pika.Message(
                invoice.to_json() if invoice else body,
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(invoice.invoice_id) if invoice else "not-an-invoice",
                type="InvoiceIssued",
                user_id="guest",  # as the coordinator signs it (the test broker's one user)
            ),
            ROUTING_INVOICE_ISSUED,
            mandatory=True,
        )


async def dead_letter_invalid_invoices(
    connection: AbstractRobustConnection, topology: Topology, *bodies: bytes
) -> None:
    """Publish each body and reject it from payments.invoices as an invalid invoice is."""
    for body in bodies:
        await publish_invoice(connection, topology, body=body)
    async with connection.channel() as channel:
        queue = await channel.get_queue(topology.payments_queue.name)
        for _ in bodies:
            await (await queue.get(timeout=5)).reject(requeue=False)

    async def arrived() -> bool:
        return (await list_dead_letters(connection, topology))[1] == len(bodies)

    await eventually(arrived, timeout=15)


async def test_dlq_list_show_replay_and_purge(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    await dead_letter_invalid_invoices(connection, topology, b'{"broken": 1}')

    listed = await reckon(amqp_url, topology, "dlq", "list", "--json")
    table = await reckon(amqp_url, topology, "dlq", "list")
    shown = await reckon(amqp_url, topology, "dlq", "show", "not-an-invoice", "--json")
    unknown = await reckon(amqp_url, topology, "dlq", "replay", "not-an-invoice", "no-such-id")
    replayed = await reckon(amqp_url, topology, "dlq", "replay", "not-an-invoice")

    assert listed.returncode == 0, listed.stderr
    [letter] = json.loads(listed.stdout)
    assert letter["id"] == "not-an-invoice"
    assert (letter["queue"], letter["exchange"]) == (topology.payments_queue.name, topology.invoices.name)
    assert (letter["routing_key"], letter["reason"], letter["count"]) == (
        ROUTING_INVOICE_ISSUED,
        "rejected",
        1,
    )
    assert (letter["type"], letter["body_size"]) == ("InvoiceIssued", 13)
    assert "body" not in letter
    assert table.returncode == 0, table.stderr
    assert "not-an-invoice" in table.stdout
    assert "1 dead letter(s)" in table.stdout
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["body"] == '{"broken": 1}'
    assert unknown.returncode == 2
    assert "no dead letter with ID no-such-id" in unknown.stderr
    assert "nothing was replayed" in unknown.stderr
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed not-an-invoice" in replayed.stdout
    async with connection.channel() as channel:  # back in payments.invoices, once
        queue = await channel.get_queue(topology.payments_queue.name)
        message = await queue.get(timeout=5)
        assert message.body == b'{"broken": 1}'
        await message.ack()
        assert await queue.get(fail=False) is None
    assert await list_dead_letters(connection, topology) == ([], 0)


async def test_dlq_purge_asks_refuses_without_stdin_and_takes_yes(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    await dead_letter_invalid_invoices(connection, topology, b"{}", b"[]")

    no_stdin = await reckon(amqp_url, topology, "dlq", "purge")
    declined = await reckon(amqp_url, topology, "dlq", "purge", stdin=b"n\n")
    still_there = (await list_dead_letters(connection, topology))[1]
    confirmed = await reckon(amqp_url, topology, "dlq", "purge", stdin=b"y\n")
    await dead_letter_invalid_invoices(connection, topology, b"{}")
    scripted = await reckon(amqp_url, topology, "dlq", "purge", "--yes")

    assert no_stdin.returncode == 2
    assert "pass --yes" in no_stdin.stderr
    assert "Traceback" not in no_stdin.stderr
    assert declined.returncode == 1
    assert "Delete all 2 dead letters" in declined.stdout
    assert still_there == 2
    assert confirmed.returncode == 0, confirmed.stderr
    assert "purged 2 dead letters" in confirmed.stdout
    assert scripted.returncode == 0, scripted.stderr
    assert "purged 1 dead letters" in scripted.stdout
    assert await list_dead_letters(connection, topology) == ([], 0)


def payment_rows(database: Path) -> list[str]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        try:
            return [
                row[0] for row in connection.execute("SELECT account_id FROM payments ORDER BY account_id")
            ]
        except sqlite3.OperationalError:  # not created yet
            return []


async def payments_process(amqp_url: str, topology: Topology, database: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "payments", "--db", str(database),
        env=environment(amqp_url, topology), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stopped(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_restarted_payments_process_drops_an_invoice_it_already_paid(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    database = tmp_path / "var" / "payments.sqlite3"
    acme, globex = sample_invoice("acme"), sample_invoice("globex")

    first = await payments_process(amqp_url, topology, database)
    try:
        await publish_invoice(connection, topology, acme)
        await eventually(lambda: payment_rows(database) == ["acme"], timeout=30)
    finally:
        first_output = await stopped(first)

    second = await payments_process(amqp_url, topology, database)
    try:
        await publish_invoice(connection, topology, acme)  # re-sent: already paid
        await publish_invoice(connection, topology, globex)
        await eventually(lambda: payment_rows(database) == ["acme", "globex"], timeout=30)
    finally:
        second_output = await stopped(second)

    assert "1 invoices handled, 0 duplicates dropped" in first_output
    assert "handled invoices in" in second_output
    assert "1 invoices handled, 1 duplicates dropped" in second_output


async def test_close_period_last_month_publishes_the_previous_calendar_month(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    expected = UTC_MONTHS.previous(datetime.now(UTC)).period_id

    async with listening(connection, topology.periods.name, ROUTING_PERIOD_CLOSED) as events:
        result = await reckon(
            amqp_url,
            topology,
            "close-period",
            "--last-month",
            "--requested-by",
            "cronjob/reckon-close-period",
        )
        [event] = await events.wait_for(1, timeout=15)

    assert result.returncode == 0, result.stderr
    assert f"PeriodClosed {expected} published" in result.stdout
    assert event["period_id"] == expected
    assert event["requested_by"] == "cronjob/reckon-close-period"
