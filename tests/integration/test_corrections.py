"""Money over the real broker: corrections a payment service cannot misread, replays that reproduce
their invoices, a preview equal to the real report, and currencies of 0, 2 and 3 minor units."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from pypdf import PdfReader
from sqlalchemy import delete, update

from accounting.amqp.topology import declare_coordinator_topology
from accounting.core.lifecycle import ReportStatus
from accounting.core.rate_card import RateCard
from accounting.core.report import Completed
from accounting.documents.loader import load_document
from accounting.documents.view import InvoiceDocument, render_html, render_pdf
from accounting.runtime.preview import run_preview
from accounting.runtime.settings import Settings
from accounting.service.replay import replay
from accounting.store import schema
from contracts import InvoiceIssued, Period, Topology, UsageRecord, credit_note_id, invoice_id
from payments.consumer import PaymentConsumer
from payments.ledger import SqlLedger, record_payment
from tests.integration.support import (
    CARD_TOML,
    TEST_CARD,
    RunningCoordinator,
    StaticService,
    coordinator,
    eventually,
    listening,
    record,
    serving,
)
from tests.store.support import tamper

pytestmark = pytest.mark.integration

PERIOD = Period.month("2026-10")
DEARER = RateCard.model_validate(
    {
        **TEST_CARD.model_dump(mode="json"),
        "items": {
            **TEST_CARD.model_dump(mode="json")["items"],
            "vcpu": {
                "description": "vCPU hours",
                "unit": "vCPU-hour",
                "price": {"model": "per_unit", "unit_price": "0.0400"},
            },
        },
    }
)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"


def vcpu_hours(account: str, hours: int) -> UsageRecord:
    """``hours`` vCPU-hours: 1,000 hours cost 32.00 on the test card, 40.00 on the dearer one."""
    return record(account, f"vm-{account}", "vcpu", str(hours * 3600), "vCPU-second")


async def declared(connection: AbstractRobustConnection, topology: Topology) -> None:
    """The exchanges and the payment queues, before anything listens (consume=False declares none)."""
    channel = await connection.channel()
    await declare_coordinator_topology(channel, topology)
    await channel.close()


async def issue_first_revision(running: RunningCoordinator) -> None:
    first = await running.run_period(PERIOD)
    assert isinstance(first.outcome, Completed)
    await running.wait_until(first, ReportStatus.COMPLETED)


def without_ids(invoice: InvoiceIssued) -> dict[str, Any]:
    """An invoice's JSON without what names its revision."""
    body: dict[str, Any] = json.loads(invoice.model_dump_json())
    for name in ("invoice_id", "report_id", "revision", "supersedes"):
        body.pop(name)
    return body


async def test_a_correction_is_a_credit_note_then_the_corrected_invoice_and_the_balance_is_what_is_owed(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name, "invoice.issued") as first_invoices_only,
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        payments = await PaymentConsumer.start(
            connection, topology, ledger=ledger, in_transaction=record_payment
        )
        try:
            await issue_first_revision(running)
            await eventually(lambda: len(payments.invoices) == 2, timeout=15)
            assert payments.balance("acct-1", "EUR") == Decimal("32.00")

            compute.records = [vcpu_hours("acct-1", 900)]
            run = await replay(running.app.coordinator, "2026-10", force=True)
            await running.wait_until(run, ReportStatus.COMPLETED)
            await eventually(
                lambda: len(payments.credit_notes) == 2 and len(payments.invoices) == 4, timeout=15
            )
        finally:
            await payments.stop()
        notes = await running.app.store.credit_notes(report_id=run.key.report_id)
        cancelled = await load_document(running.app.store, invoice_id("acct-1", "2026-10", 1))
        correction = await load_document(running.app.store, invoice_id("acct-1", "2026-10", 2))
    owed = {account: await ledger.balance(account) for account in ("acct-1", "acct-2")}
    await ledger.close()

    assert [(note.account_id, note.credits, note.total) for note in notes] == [
        ("acct-1", invoice_id("acct-1", "2026-10", 1), Decimal("32.00")),
        ("acct-2", invoice_id("acct-2", "2026-10", 1), Decimal("0.32")),
    ]
    assert notes[0].credit_note_id == credit_note_id("acct-1", "2026-10", 2)
    # After the correction each account owes what its corrected invoice says, once.
    assert payments.balance("acct-1", "EUR") == Decimal("28.80")
    assert payments.balance("acct-2", "EUR") == Decimal("0.00")
    assert owed == {"acct-1": {"EUR": Decimal("28.80")}, "acct-2": {"EUR": Decimal("0.00")}}
    corrected = payments.invoices[invoice_id("acct-1", "2026-10", 2)]
    assert corrected.supersedes == invoice_id("acct-1", "2026-10", 1)
    # A payment service bound only to invoice.issued saw the first invoices and nothing else.
    assert sorted(m["invoice_id"] for m in first_invoices_only.messages) == sorted(
        str(invoice_id(account, "2026-10", 1)) for account in ("acct-1", "acct-2")
    )
    assert all(m["supersedes"] is None for m in first_invoices_only.messages)
    # The documents, from stored data only: the corrected invoice names what it supersedes and the
    # credit note; the cancelled one says so.
    assert isinstance(correction, InvoiceDocument) and isinstance(cancelled, InvoiceDocument)
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(render_pdf(correction))).pages)
    for expected in (
        "acct-1",
        "28.80",
        str(invoice_id("acct-1", "2026-10", 1)),
        str(credit_note_id("acct-1", "2026-10", 2)),
        TEST_CARD.fingerprint[:20],
    ):
        assert expected in text.replace("\n", " "), expected
    assert (
        cancelled.credited_by is not None and cancelled.credited_by.credit_note_id == notes[0].credit_note_id
    )
    assert str(credit_note_id("acct-1", "2026-10", 2)) in render_html(cancelled)


async def test_reconcile_traces_the_credit_notes_and_its_balances_are_what_the_payment_ledger_holds(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    """Reconcile reads only the accounting store; the payment consumer's ledger, kept from the
    messages alone, holds the same balance for every account. Then a credit note is tampered
    with (its total, then its very existence) and reconcile exits 1 naming it."""
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=store_url) as running,
    ):
        payments = await PaymentConsumer.start(
            connection, topology, ledger=ledger, in_transaction=record_payment
        )
        try:
            await issue_first_revision(running)
            compute.records = [vcpu_hours("acct-1", 900), vcpu_hours("acct-3", 5)]
            run = await replay(running.app.coordinator, "2026-10", force=True)
            await running.wait_until(run, ReportStatus.COMPLETED)
            await eventually(
                lambda: len(payments.credit_notes) == 2 and len(payments.invoices) == 5, timeout=15
            )
        finally:
            await payments.stop()
    held = {account: await ledger.balance(account) for account in ("acct-1", "acct-2", "acct-3")}
    await ledger.close()

    code, out, err = await reconcile_command(store_url, "2026-10", "--json")
    assert code == 0, err
    document = json.loads(out)
    ledger_of = document["ledger"]
    traced = {entry["account_id"]: {entry["currency"]: Decimal(entry["owed"])} for entry in ledger_of}
    assert (
        traced
        == held
        == {
            "acct-1": {"EUR": Decimal("28.80")},
            "acct-2": {"EUR": Decimal("0.00")},
            "acct-3": {"EUR": Decimal("0.16")},
        }
    )
    [first_credit] = [entry for entry in document["ledger"] if entry["account_id"] == "acct-1"]
    assert (first_credit["invoiced"], first_credit["credited"]) == ("60.80", "32.00")

    notes = schema.credit_notes
    await tamper(store_url, update(notes).where(notes.c.account_id == "acct-1").values(total="0.01"))
    code, _, err = await reconcile_command(store_url, "2026-10")
    assert code == 1
    assert "total of the row differs from the body" in " ".join(err.split())
    await tamper(store_url, delete(notes).where(notes.c.account_id == "acct-1"))
    code, _, err = await reconcile_command(store_url, "2026-10")
    assert code == 1
    assert "(superseded) has 0 credit note(s), not 1" in " ".join(err.split())


async def test_a_dry_run_shows_the_one_account_a_forced_replay_corrects_and_changes_nothing(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    compute = StaticService(
        "compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10), vcpu_hours("acct-3", 5)]
    )
    settings = Settings(
        amqp_url=amqp_url, namespace=topology.namespace, services=("compute",), deadline_seconds=5,
        store_url=store_url, shutdown_grace_seconds=1,
    )  # fmt: skip
    await declared(connection, topology)
    async with serving(connection, topology, compute):
        async with coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url
        ) as running:
            await issue_first_revision(running)
        compute.records = [vcpu_hours("acct-1", 900), vcpu_hours("acct-3", 5), vcpu_hours("acct-4", 1)]
        async with listening(connection, topology.invoices.name) as published:
            planned = await command_json(settings, tmp_path, "replay", "2026-10", "--dry-run", "--json")
            await asyncio.sleep(0.5)  # anything published would have arrived by now
        async with coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url
        ) as running:
            assert [record.revision for record in await running.app.store.list_reports("2026-10")] == [1]
            real = await replay(running.app.coordinator, "2026-10", force=True)
            await running.wait_until(real, ReportStatus.COMPLETED)
            issued = await running.app.store.invoices(report_id=real.key.report_id)

    assert published.messages == []
    assert (planned["corrects_revision"], planned["unchanged"], planned["aborted"]) == (1, 1, False)
    assert [
        (item["account_id"], item["action"], item["owed_now"], item["owed_after"], item["change"])
        for item in planned["accounts"]
    ] == [
        ("acct-1", "corrected", "32.00", "28.80", "-3.20"),
        ("acct-2", "emptied", "0.32", "0.00", "-0.32"),
        ("acct-4", "new", "0.00", "0.03", "0.03"),
    ]
    # The forced replay then issues exactly what the dry run showed (acct-3 unchanged: nothing).
    assert [(invoice.account_id, str(invoice.total)) for invoice in issued] == [
        ("acct-1", "28.80"),
        ("acct-2", "0.00"),
        ("acct-4", "0.03"),
    ]


async def command_json(settings: Settings, tmp_path: Path, *arguments: str) -> dict[str, Any]:
    """A ``reckon`` command with ``--json`` as an operator runs it, in a process of its own."""
    card = tmp_path / "rate-card.toml"
    card.write_text(CARD_TOML)
    environment = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "RECKON_NAMESPACE": settings.namespace,
        "RECKON_SERVICES": ",".join(settings.services),
        "RECKON_STORE_URL": settings.store_url,
        "RECKON_RATE_CARD": str(card),
        "RECKON_DEADLINE_SECONDS": "5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", *arguments,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    printed: dict[str, Any] = json.loads(out)
    return printed


async def reconcile_command(store_url: str, *arguments: str) -> tuple[int, str, str]:
    """``reckon reports reconcile …`` as an operator runs it, in a process of its own."""
    environment = {**os.environ, "RECKON_STORE_URL": store_url, "COLUMNS": "240"}
    environment.pop("RECKON_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", "reports", "reconcile", *arguments,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_replay_prices_with_the_card_of_the_revision_it_replaces_and_so_corrects_nothing(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    async with serving(connection, topology, compute):
        async with coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url
        ) as running:
            await issue_first_revision(running)
            first = await running.app.store.invoices(period_id="2026-10")
        # Prices went up since; the coordinator now runs with the dearer card.
        async with coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url, card=DEARER
        ) as running:
            same = await replay(running.app.coordinator, "2026-10", force=True)
            await running.wait_until(same, ReportStatus.COMPLETED)
            reproduced = await running.app.store.invoices(report_id=same.key.report_id)
            noted = await running.app.store.credit_notes(report_id=same.key.report_id)
            repriced_run = await replay(running.app.coordinator, "2026-10", force=True, card=DEARER)
            await running.wait_until(repriced_run, ReportStatus.COMPLETED)
            repriced = await running.app.store.invoices(report_id=repriced_run.key.report_id)

    # Priced with the first revision's card, the same replies give the same charges: a correction
    # issues nothing (priced with the dearer card, every account would have been corrected).
    assert (reproduced, noted) == ([], [])
    assert isinstance(same.outcome, Completed) and same.outcome.report.total == Decimal("0.00")
    assert {invoice.rate_card for invoice in first} == {TEST_CARD.fingerprint}
    assert [(invoice.account_id, invoice.total) for invoice in repriced] == [
        ("acct-1", Decimal("40.00")),
        ("acct-2", Decimal("0.40")),
    ]
    assert {invoice.rate_card for invoice in repriced} == {DEARER.fingerprint}


async def test_the_real_report_matches_the_preview_to_the_cent_and_the_preview_publishes_nothing(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, store_url: str, tmp_path: Path
) -> None:
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    settings = Settings(
        amqp_url=amqp_url,
        namespace=topology.namespace,
        services=("compute",),
        deadline_seconds=5,
        store_url=store_url,
        shutdown_grace_seconds=1,
    )
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name) as published,
    ):
        preview = await run_preview(settings, TEST_CARD, PERIOD)
        alone = await run_preview(settings, TEST_CARD, PERIOD, account="acct-2")
        printed = await preview_command(settings, tmp_path, "2026-10", "--account", "acct-1", "--json")
        async with coordinator(
            amqp_url, topology, ["compute"], consume=False, store_url=store_url
        ) as running:
            assert await running.app.store.list_reports("2026-10") == []  # previews are kept apart
            real = await running.run_period(PERIOD)
            await running.wait_until(real, ReportStatus.COMPLETED)
            issued = await running.app.store.invoices(report_id=real.key.report_id)
            await published.wait_for(len(issued))

    assert isinstance(preview.run.outcome, Completed) and isinstance(real.outcome, Completed)
    ids = {"invoice_id", "report_id", "number", "issued_at", "due_at"}
    assert [invoice.number for invoice in preview.invoices] == [
        "PREVIEW-INV-2026-000001",
        "PREVIEW-INV-2026-000002",
    ]
    assert [invoice.number for invoice in issued] == ["INV-2026-000001", "INV-2026-000002"]
    assert [invoice.model_dump_json(exclude=ids) for invoice in preview.invoices] == [
        invoice.model_dump_json(exclude=ids) for invoice in issued
    ]
    # A preview's ids are never an issued invoice's (a second document with the same number).
    previewed = {invoice.invoice_id for invoice in (*preview.invoices, *alone.invoices)}
    assert previewed.isdisjoint(invoice.invoice_id for invoice in issued)
    assert preview.run.key.report_id != real.key.report_id
    assert preview.run.outcome.report.total == real.outcome.report.total == Decimal("32.32")
    assert [invoice.account_id for invoice in alone.invoices] == ["acct-2"]
    assert alone.run.key.revision == 2  # a second preview, not a revision of the period
    assert len(published.messages) == len(issued)  # only the real report's invoices went out
    assert (printed["preview_revision"], printed["total"], printed["shown_total"]) == (3, "32.32", "32.00")
    assert [invoice["account_id"] for invoice in printed["invoices"]] == ["acct-1"]


async def preview_command(settings: Settings, tmp_path: Path, *arguments: str) -> dict[str, Any]:
    """``reckon preview …`` as an operator runs it, in a process of its own."""
    return await command_json(settings, tmp_path, "preview", *arguments)


CURRENCIES = {
    # currency, minor units as ISO 4217 says (the card leaves them out), 1,000 vCPU-hours at 33.3333
    "JPY": ("33333", "33333"),
    "EUR": ("33333.30", "33333.30"),
    "BHD": ("33333.300", "33333.300"),
}


@pytest.mark.parametrize("currency", sorted(CURRENCIES))
async def test_every_currency_is_invoiced_in_its_own_minor_units(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, currency: str
) -> None:
    card = RateCard.from_toml(
        f"""
currency = "{currency}"

[items.vcpu]
description = "vCPU hours"
unit = "vCPU-hour"
price = {{ model = "per_unit", unit_price = "33.3333" }}
"""
    )
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000)])
    async with (
        serving(connection, topology, compute),
        coordinator(amqp_url, topology, ["compute"], consume=False, card=card) as running,
    ):
        run = await running.run_period(PERIOD)
        await running.wait_until(run, ReportStatus.COMPLETED)
        [invoice] = await running.app.store.invoices(report_id=run.key.report_id)

    line_amount, total = CURRENCIES[currency]
    assert isinstance(run.outcome, Completed)
    assert (invoice.currency, str(invoice.lines[0].amount), str(invoice.total)) == (
        currency,
        line_amount,
        total,
    )
    assert str(run.outcome.report.total) == total
