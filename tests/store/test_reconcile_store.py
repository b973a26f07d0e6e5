"""``reckon reports reconcile`` on a real report in a real SQLite store: records stored as the gather
stores them, priced by the real pricer (a few records per window), then traced back account by
account and checked against the stored invoices and the report's total."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import func, update
from typer.testing import CliRunner

from accounting.cli.reconcile import register
from accounting.core.lifecycle import ReportStatus
from accounting.core.rate_card import RateCard
from accounting.core.reconcile import AccountTrace
from accounting.core.report import ReportKey
from accounting.service.pricer import Pricer
from accounting.service.reconcile import CannotReconcile, account_traces, find_target, reconcile
from accounting.store import schema
from accounting.store.repository import RecordRow, ReportStore, StoredReply
from tests.store.support import OCTOBER, A, chunk, minutes, report_at, tamper

ROOT = Path(__file__).resolve().parents[2]
CARD = RateCard.from_toml((ROOT / "config" / "rate-card.toml").read_text(encoding="utf-8"))
MONTH = 31 * 86_400


def compute_records() -> list[RecordRow]:
    records: list[RecordRow] = []
    for number in range(1, 13):
        account = f"acct-{number:02d}"
        if number == 12:
            continue  # storage only
        records.append((account, f"vm-{number}", "vcpu", "vCPU-second", str(3600 * number + 1)))
        records.append((account, f"vm-{number}", "memory", "MiB-second", str(1024 * 3600 * number)))
    # One account with more records than a pricing window (and a reconcile page).
    records.extend(("acct-05", f"vm-5-{n}", "vcpu", "vCPU-second", "1234.5") for n in range(10))
    records.append(("acct-07", "vm-7-idle", "vcpu", "vCPU-second", "0"))
    return records


def storage_records() -> list[RecordRow]:
    records: list[RecordRow] = []
    for number in (2, 3, 5, 8, 12):
        account = f"acct-{number:02d}"
        records.append(
            (account, f"vol-{number}", "block_storage", "byte-second", str(10**12 * MONTH * number))
        )
        records.append(
            (account, f"bkt-{number}", "object_storage", "byte-second", str(10**11 * MONTH * number))
        )
        records.append((account, f"net-{number}", "egress", "byte", str(10**11 * number + 1)))
    return records


async def build_report(store: ReportStore, card: RateCard = CARD) -> Decimal:
    """Period 2026-10, revision 1: gathered, priced and stored as the coordinator does; its total."""
    record = await report_at(store, ReportStatus.GATHERING)
    rid = record.report_id
    gather_id = await store.begin_gather(
        rid, A, attempt="first", at=minutes(2), requested=("compute", "storage")
    )
    answers = {"compute": compute_records(), "storage": storage_records()}
    for service, records in answers.items():
        await store.append_chunks(
            rid, A, gather_id, [chunk(service, 0, records[:9]), chunk(service, 1, records[9:])], minutes(3)
        )
    await store.save_outcomes(
        rid,
        A,
        gather_id,
        [
            StoredReply(service, f"req-{service}", "ok", None, None, len(rows))
            for service, rows in answers.items()
        ],
        minutes(4),
    )
    key = ReportKey(report_id=rid, revision=1, period=OCTOBER)
    await Pricer(store, card, A, lambda: minutes(5), page_records=7).run(key, gather_id, None)
    priced = await store.get(rid)
    assert priced is not None and priced.status is ReportStatus.PUBLISHING and priced.total is not None
    return priced.total


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    store = await ReportStore.open(f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3")
    try:
        yield store
    finally:
        await store.close()


async def traces(store: ReportStore, **options: Any) -> list[AccountTrace]:
    target = await find_target(store, "2026-10")
    return [trace async for trace in account_traces(store, target, **options)]


# --- the shell -------------------------------------------------------------------------------------


async def test_a_completed_report_reconciles_to_its_total_to_the_cent(sqlite_store: ReportStore) -> None:
    report_total = await build_report(sqlite_store)
    target = await find_target(sqlite_store, "2026-10")
    assert target.report_total == report_total
    totals = await reconcile(sqlite_store, target)

    assert totals.ok, [problem.message for problem in totals.problems]
    invoices = await sqlite_store.invoices(report_id=target.record.report_id)
    assert totals.total == totals.stored_total == report_total == sum(i.total for i in invoices)
    assert totals.invoices == len(invoices) == totals.accounts == 12
    assert totals.records == len(compute_records()) + len(storage_records())
    assert sum(item.amount for item in totals.items) == report_total
    assert {item.item for item in totals.items} == {
        "vcpu",
        "memory",
        "block_storage",
        "object_storage",
        "egress",
    }


async def test_every_traced_line_equals_the_stored_invoice_line(sqlite_store: ReportStore) -> None:
    await build_report(sqlite_store)
    target = await find_target(sqlite_store, "2026-10")
    stored = {i.account_id: i for i in await sqlite_store.invoices(report_id=target.record.report_id)}
    for trace in await traces(sqlite_store):
        invoice = stored[trace.account_id]
        assert trace.invoice_id == str(invoice.invoice_id) and trace.total == invoice.total
        traced = [(item.item, line.tier, line.amount) for item in trace.items for line in item.lines]
        assert traced == [(line.item, line.tier, line.amount) for line in invoice.lines]


async def test_pages_of_a_few_records_trace_the_same_accounts(sqlite_store: ReportStore) -> None:
    await build_report(sqlite_store)
    whole = await traces(sqlite_store)
    paged = await traces(sqlite_store, page_records=3)  # acct-05 alone has more records than a page
    assert [trace.account_id for trace in paged] == [f"acct-{n:02d}" for n in range(1, 13)]
    assert paged == whole


async def test_one_account_reads_that_account_alone(sqlite_store: ReportStore) -> None:
    await build_report(sqlite_store)
    [trace] = await traces(sqlite_store, account="acct-05")
    [everyone] = [t for t in await traces(sqlite_store) if t.account_id == "acct-05"]
    assert trace == everyone and trace.problems == ()
    [vcpu] = [item for item in trace.items if item.item == "vcpu"]
    assert [source.records for source in vcpu.sources] == [11]
    with pytest.raises(CannotReconcile, match="acct-99 has neither records nor an invoice"):
        await traces(sqlite_store, account="acct-99")


async def test_a_stored_card_that_no_longer_matches_the_invoices_is_found(sqlite_store: ReportStore) -> None:
    await build_report(sqlite_store)
    changed = CARD.model_dump(mode="json")
    changed["items"]["vcpu"]["price"]["unit_price"] = "0.0330"
    reports = schema.reports
    async with sqlite_store.engine.begin() as connection:
        await connection.execute(update(reports).values(rate_card=changed))
    totals = await reconcile(sqlite_store, await find_target(sqlite_store, "2026-10"))

    assert not totals.ok
    whats = {problem.what for problem in totals.problems}
    assert {"amount differs", "unit price differs", "invoice total differs"} <= whats
    assert "traced total differs from the current invoices' total" in whats


async def test_a_period_without_a_completed_report_cannot_be_reconciled(sqlite_store: ReportStore) -> None:
    with pytest.raises(CannotReconcile, match="no report for period 2026-10"):
        await find_target(sqlite_store, "2026-10")
    await report_at(sqlite_store, ReportStatus.PRICING)
    with pytest.raises(CannotReconcile, match="no completed report"):
        await find_target(sqlite_store, "2026-10")
    with pytest.raises(CannotReconcile, match="is pricing"):
        await find_target(sqlite_store, "2026-10", 1)


# --- the command -----------------------------------------------------------------------------------


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Decimal]]:
    """A store holding the report, named by RECKON_STORE_URL as an operator's shell would."""
    url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"

    async def build() -> Decimal:
        store = await ReportStore.open(url)
        try:
            return await build_report(store)
        finally:
            await store.close()

    total = asyncio.run(build())
    monkeypatch.setenv("RECKON_STORE_URL", url)
    monkeypatch.delenv("RECKON_CONFIG", raising=False)
    yield url, total


def reckon(*arguments: str) -> Any:
    app = typer.Typer()
    reports = typer.Typer()
    app.add_typer(reports, name="reports")
    register(reports)
    return CliRunner().invoke(app, ["reports", "reconcile", *arguments], env={"COLUMNS": "240"})


def test_the_command_prints_the_trace_and_totals_that_add_up(store_url: tuple[str, Decimal]) -> None:
    _, total = store_url
    result = reckon("2026-10")
    assert result.exit_code == 0, result.output
    assert "OK: every cent traced" in result.stdout
    assert f"{total:f} EUR" in result.stdout
    assert "1/3600" in result.stdout  # the vCPU-second factor, exact


def test_json_is_one_document_whose_totals_equal_the_reports(store_url: tuple[str, Decimal]) -> None:
    _, total = store_url
    result = reckon("2026-10", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["report"]["total"] == str(total)
    assert document["totals"]["ok"] is True
    assert Decimal(document["totals"]["total"]) == Decimal(document["totals"]["report_total"]) == total
    assert [account["account_id"] for account in document["accounts"]] == [
        f"acct-{n:02d}" for n in range(1, 13)
    ]
    amounts = [
        Decimal(line["amount"])
        for account in document["accounts"]
        for item in account["items"]
        for line in item["lines"]
    ]
    assert sum(amounts) == total
    [vcpu] = [item for item in document["accounts"][0]["items"] if item["item"] == "vcpu"]
    assert vcpu["sources"][0]["factor"] == "1/3600"
    assert vcpu["sources"][0]["raw_quantity"] == "3601"


def test_csv_parses_and_its_total_row_is_the_reports_total(store_url: tuple[str, Decimal]) -> None:
    _, total = store_url
    result = reckon("2026-10", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    [final] = [row for row in rows if row["kind"] == "total"]
    assert rows[-1] == final
    assert (
        Decimal(final["amount"]) == Decimal(final["report_total"]) == Decimal(final["stored_amount"]) == total
    )
    assert sum(Decimal(row["amount"]) for row in rows if row["kind"] == "line") == total
    assert sum(Decimal(row["amount"]) for row in rows if row["kind"] == "invoice") == total
    assert all(row["amount"] == row["stored_amount"] for row in rows if row["kind"] == "line")
    assert {row["status"] for row in rows if row["kind"] != "item" and row["kind"] != "item-source"} == {"ok"}


def test_one_account_on_the_command_line(store_url: tuple[str, Decimal]) -> None:
    result = reckon("2026-10", "--account", "acct-05", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["account_id"] for row in rows if row["kind"] in ("source", "line", "invoice")} == {"acct-05"}
    [final] = [row for row in rows if row["kind"] == "total"]
    assert final["report_total"] == ""  # one account: checked against its invoice, not the report
    table = reckon("2026-10", "--account", "acct-05", "--revision", "1")
    assert table.exit_code == 0, table.output
    assert "acct-05" in table.stdout and "invoice total" in table.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["2026-10", "--json", "--csv"], "choose one"),
        (["2026-09"], "no report for period 2026-09"),
        (["2026-10", "--revision", "2"], "no report for period 2026-10 revision 2"),
        (["2026-10", "--account", "nobody"], "nobody has neither records nor an invoice"),
    ],
)
def test_what_cannot_be_reconciled_exits_2_with_one_line(
    store_url: tuple[str, Decimal], arguments: list[str], message: str
) -> None:
    result = reckon(*arguments)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_mismatch_fails_loudly_with_exit_1(store_url: tuple[str, Decimal]) -> None:
    url, _ = store_url

    async def tamper() -> None:
        store = await ReportStore.open(url)
        try:
            async with store.engine.begin() as connection:
                await connection.execute(update(schema.reports).values(total="0.01"))
        finally:
            await store.close()

    asyncio.run(tamper())
    result = reckon("2026-10", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["totals"]["ok"] is False
    assert "the invoices this revision issued do not add up to its report's total" in result.stderr
    assert "reconciliation failed" in result.stderr


def tamper_with(url: str, statement: Any) -> None:
    asyncio.run(tamper(url, statement))


def test_the_json_has_each_accounts_balance_and_the_raw_replies_checked(
    store_url: tuple[str, Decimal],
) -> None:
    _, total = store_url
    result = reckon("2026-10", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    ledger = document["ledger"]
    assert [entry["account_id"] for entry in ledger] == [f"acct-{n:02d}" for n in range(1, 13)]
    assert sum(Decimal(entry["owed"]) for entry in ledger) == total
    assert all(entry["credited"] == "0" for entry in ledger)
    assert document["audit"]["raw_replies"] == {"checked": 4, "unverifiable": 0}
    assert document["audit"]["currencies"]["EUR"]["owed"] == str(total)
    assert document["report"]["rate_card_fingerprint"] == CARD.fingerprint


def test_a_raw_reply_changed_after_it_was_stored_fails_naming_it(store_url: tuple[str, Decimal]) -> None:
    url, _ = store_url
    chunks = schema.reply_chunks
    tamper_with(
        url,
        update(chunks)
        .where(chunks.c.service == "storage", chunks.c.seq == 0)
        .values(body=chunks.c.body + " "),
    )
    result = reckon("2026-10")
    assert result.exit_code == 1
    assert "(chunk 0) differs from the body it was stored with" in result.stderr
    assert "storage" in result.stderr


def test_an_invoice_whose_period_was_altered_fails_naming_it(store_url: tuple[str, Decimal]) -> None:
    url, _ = store_url
    invoices = schema.invoices
    tamper_with(
        url,
        update(invoices)
        .where(invoices.c.account_id == "acct-03")
        .values(body=func.replace(invoices.c.body, "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")),
    )
    result = reckon("2026-10")
    assert result.exit_code == 1
    assert "period differs from its report's" in result.stderr
