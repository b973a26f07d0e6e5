"""``reckon reports reconcile PERIOD``: trace every cent of a completed report to the stored records.

Per account and item: the raw quantity of each (service, metric, unit), the exact conversion
factor, the billable quantity (rounded once per account and item), the tier(s), unit prices and
amounts, and the invoice total, each line checked against the stored invoice; then the exact
totals per item and in all, checked against the report's total. Any difference is printed on
stderr and the command exits 1; a report it cannot find exits 2.

Output: Rich tables (the per-line detail for ``--account`` or a report of at most
``DETAIL_ACCOUNTS`` accounts, a per-item summary and the grand total always); ``--json``: one
document ``{"report", "accounts": [...], "totals"}`` with decimals as strings; ``--csv``: the rows
of ``accounting.core.reconcile_export.CSV_COLUMNS`` (``source``, ``line`` and ``invoice`` rows per
account, then ``item-source``, ``item`` and ``total`` rows). Both stream: a report of 100,000
accounts is written as it is read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Protocol

import typer
from rich.markup import escape
from rich.table import Table

from accounting.cli.common import ConfigOption, JsonOption, console, errors, fail, store_command
from accounting.core.exact import exact_add, fraction_text
from accounting.core.reconcile import AccountTrace
from accounting.core.reconcile_export import CSV_COLUMNS, account_json, csv_rows, total_csv_rows, totals_json
from accounting.core.reconcile_totals import Totals, TotalsBuilder
from accounting.service.audit import (
    AccountAudit,
    ReplyCheck,
    audit_documents,
    check_replies,
)
from accounting.service.queries import card_fingerprint
from accounting.service.reconcile import CannotReconcile, Target, account_traces, find_target
from accounting.store.repository import ReportStore

DETAIL_ACCOUNTS = 50
"""Without ``--account``, the per-line table is shown for reports of at most this many accounts."""

SHOWN_PROBLEMS = 20
"""Problems printed on stderr; ``--json`` carries the first ``MAX_PROBLEMS`` and the count."""

CsvOption = Annotated[
    bool,
    typer.Option(
        "--csv",
        help="Print CSV: each account's source, line and invoice rows, then the item and total rows "
        "(the line rows' amounts add up to the total).",
    ),
]


def register(reports_app: typer.Typer) -> None:
    """Add ``reconcile`` to the ``reckon reports`` group."""
    reports_app.command("reconcile")(reports_reconcile)


def reports_reconcile(
    period: Annotated[str, typer.Argument(help="The period, e.g. 2026-10.")],
    revision: Annotated[
        int | None, typer.Option(min=1, help="A revision; default the newest completed one.")
    ] = None,
    account: Annotated[str | None, typer.Option(help="Only this account (reads nothing else).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """Trace every cent of a completed report to the stored records, and check it adds up exactly.

    Per account, service, metric and unit: raw quantity, conversion factor, billable quantity,
    tier(s), unit price, amount and invoice total, each line checked against the stored invoice;
    totals per item and in all, checked against the report's total. Exits 1 on any difference.
    """
    if as_json and as_csv:
        fail("--json and --csv print different formats: choose one")
    output: _Output = _JsonOutput() if as_json else _CsvOutput() if as_csv else _TableOutput(account)

    async def work(store: ReportStore) -> Totals | str:
        try:
            target = await find_target(store, period, revision)
            traces = account_traces(store, target, account=account)
            first = await anext(traces, None)  # an unknown --account fails here, before any output
        except CannotReconcile as error:
            return str(error)
        output.begin(target, account)
        builder = TotalsBuilder(target.card.currency, revision=target.record.revision)
        async for trace in _chain(first, traces):
            builder.add(trace)
            output.account(trace)
        ledger = LedgerSummary()
        async for audit in audit_documents(store, target, account=account):
            ledger.add(audit)
            builder.note(audit.problems)
            output.ledger(audit)
        if account is None:
            builder.note([problem async for problem in check_replies(store, target, ledger.replies)])
        totals = builder.finish(None if account is not None else target.report_total)
        output.end(totals, ledger)
        return totals

    result = store_command(config, work)
    if isinstance(result, str):
        fail(result)
    if not result.ok:
        for problem in result.problems[:SHOWN_PROBLEMS]:
            errors.print(f"[red]mismatch:[/] {escape(problem.message)}", soft_wrap=True)
        more = result.problem_count - min(len(result.problems), SHOWN_PROBLEMS)
        if more:
            errors.print(f"… and {more} more (--json lists the first {len(result.problems)})")
        errors.print(
            f"[red]error:[/] reconciliation failed: {result.problem_count} difference(s) between the "
            "stored records, the report's rate card and the stored invoices",
            soft_wrap=True,
        )
        raise typer.Exit(1)


async def _chain(
    first: AccountTrace | None, rest: AsyncIterator[AccountTrace]
) -> AsyncIterator[AccountTrace]:
    if first is None:
        return
    yield first
    async for trace in rest:
        yield trace


def _report(target: Target, account: str | None) -> dict[str, Any]:
    record = target.record
    return {
        "period": record.period.period_id,
        "revision": record.revision,
        "report_id": str(record.report_id),
        "status": record.status.value,
        "currency": target.card.currency,
        "total": str(target.report_total),
        "rate_card_fingerprint": None if record.rate_card is None else card_fingerprint(record.rate_card),
        "account": account,
    }


@dataclass
class LedgerSummary:
    """What the audit saw: accounts with documents, their money per currency, the raw replies."""

    accounts: int = 0
    invoiced: dict[str, Decimal] = field(default_factory=dict)
    credited: dict[str, Decimal] = field(default_factory=dict)
    replies: ReplyCheck = field(default_factory=ReplyCheck)

    def add(self, audit: AccountAudit) -> None:
        self.accounts += 1
        for balance in audit.balances:
            currency = balance.currency
            self.invoiced[currency] = exact_add(self.invoiced.get(currency, Decimal(0)), balance.invoiced)
            self.credited[currency] = exact_add(self.credited.get(currency, Decimal(0)), balance.credited)

    def as_json(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts,
            "currencies": {
                currency: {
                    "invoiced": str(invoiced),
                    "credited": str(self.credited.get(currency, Decimal(0))),
                    "owed": str(invoiced - self.credited.get(currency, Decimal(0))),
                }
                for currency, invoiced in sorted(self.invoiced.items())
            },
            "raw_replies": {"checked": self.replies.checked, "unverifiable": self.replies.unverifiable},
        }


class _Output(Protocol):
    def begin(self, target: Target, account: str | None) -> None: ...
    def account(self, trace: AccountTrace) -> None: ...
    def ledger(self, audit: AccountAudit) -> None: ...
    def end(self, totals: Totals, ledger: LedgerSummary) -> None: ...


class _JsonOutput:
    """One JSON document, written an account at a time."""

    def __init__(self) -> None:
        self._first = True
        self._ledger_first = True

    def begin(self, target: Target, account: str | None) -> None:
        typer.echo(f'{{"report": {json.dumps(_report(target, account))},\n"accounts": [', nl=False)

    def account(self, trace: AccountTrace) -> None:
        separator = "\n" if self._first else ",\n"
        self._first = False
        typer.echo(separator + json.dumps(account_json(trace), default=str), nl=False)

    def ledger(self, audit: AccountAudit) -> None:
        separator = '\n],\n"ledger": [\n' if self._ledger_first else ",\n"
        self._ledger_first = False
        for balance in audit.balances:
            typer.echo(separator + json.dumps(balance.as_json()), nl=False)
            separator = ",\n"

    def end(self, totals: Totals, ledger: LedgerSummary) -> None:
        if self._ledger_first:
            typer.echo('\n],\n"ledger": [', nl=False)
        typer.echo(f'\n],\n"audit": {json.dumps(ledger.as_json())}', nl=False)
        typer.echo(f',\n"totals": {json.dumps(totals_json(totals), indent=2, default=str)}}}')


class _CsvOutput:
    """A header, then each account's rows as it is traced, then the totals' rows."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")

    def _flush(self) -> None:
        typer.echo(self._buffer.getvalue(), nl=False)
        self._buffer.seek(0)
        self._buffer.truncate()

    def begin(self, target: Target, account: str | None) -> None:
        self._writer.writeheader()
        self._flush()

    def account(self, trace: AccountTrace) -> None:
        self._writer.writerows(csv_rows(trace))
        self._flush()

    def ledger(self, audit: AccountAudit) -> None:
        """The balances are in --json; a problem the audit finds still fails the command."""

    def end(self, totals: Totals, ledger: LedgerSummary) -> None:
        self._writer.writerows(total_csv_rows(totals))
        self._flush()


class _TableOutput:
    """The per-line detail of a few accounts (kept until the end), the totals of all."""

    def __init__(self, account: str | None) -> None:
        self._detail: list[AccountTrace] | None = []
        self._limit = None if account is not None else DETAIL_ACCOUNTS
        self._title = ""

    def begin(self, target: Target, account: str | None) -> None:
        record = target.record
        digest = "" if record.rate_card is None else f", rate card {card_fingerprint(record.rate_card)}"
        self._title = f"{record.period.period_id} rev {record.revision} ({target.card.currency}{digest})"

    def account(self, trace: AccountTrace) -> None:
        if self._detail is None:
            return
        if self._limit is not None and len(self._detail) >= self._limit:
            self._detail = None  # too many to show: the summary only
            return
        self._detail.append(trace)

    def ledger(self, audit: AccountAudit) -> None:
        """Summed in ``LedgerSummary``; shown at the end."""

    def end(self, totals: Totals, ledger: LedgerSummary) -> None:
        if self._detail is not None:
            console.print(_lines_table(self._detail, f"Trace of {self._title}"))
        else:
            console.print(
                f"{totals.accounts} accounts: the per-line detail is in --csv or --json, "
                "or for one account with --account ACCOUNT"
            )
        console.print(_totals_table(totals, f"Totals of {self._title}"))
        for currency, invoiced in sorted(ledger.invoiced.items()):
            credited = ledger.credited.get(currency, Decimal(0))
            owed = invoiced - credited
            console.print(
                f"documents of {ledger.accounts} account(s), every issued revision: invoiced "
                f"{invoiced} {currency}, credited {credited} {currency}, owed {owed} {currency}"
            )
        replies = ledger.replies
        console.print(
            f"raw replies: {replies.checked} checked against their stored digests"
            + (f", {replies.unverifiable} stored before digests were kept" if replies.unverifiable else "")
        )


def _mark(value: str, ok: bool) -> str:
    return escape(value) if ok else f"[red]{escape(value)}[/]"


def _lines_table(traces: list[AccountTrace], title: str) -> Table:
    table = Table(title=title)
    for name, right in (
        ("account", False),
        ("item", False),
        ("reported (service: raw quantity unit * factor)", False),
        ("billable", True),
        ("tier", False),
        ("quantity", True),
        ("unit price", True),
        ("amount", True),
        ("stored", True),
    ):
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for trace in traces:
        for item in trace.items:
            reported = "\n".join(
                f"{source.service}: {source.raw_quantity:f} {source.unit} * {fraction_text(source.factor)}"
                for source in item.sources
            )
            for number, line in enumerate(item.lines):
                first = number == 0
                stored = "" if line.stored_amount is None else f"{line.stored_amount:f}"
                table.add_row(
                    escape(trace.account_id) if first else "",
                    escape(item.item) if first else "",
                    escape(reported) if first else "",
                    f"{item.billable_quantity:f} {escape(item.billable_unit)}" if first else "",
                    escape(line.tier_range or ("" if line.tier is None else str(line.tier))),
                    f"{line.quantity:f} {escape(line.unit)}",
                    f"{line.unit_price:f}",
                    f"{line.amount:f}",
                    _mark(stored or "missing", line.stored_amount == line.amount),
                )
        stored_total = "not issued" if trace.stored_total is None else f"{trace.stored_total:f}"
        table.add_row(
            f"[bold]{escape(trace.account_id)}[/]",
            "[bold]invoice total[/]",
            escape(trace.invoice_id or ""),
            "",
            "",
            "",
            "",
            f"[bold]{trace.total:f}[/]",
            _mark(stored_total, not trace.problems),
            end_section=True,
        )
    return table


def _totals_table(totals: Totals, title: str) -> Table:
    table = Table(title=title)
    for name, right in (
        ("item", False),
        ("raw (service: quantity unit)", False),
        ("accounts", True),
        ("billable quantity", True),
        ("amount", True),
    ):
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for number, item in enumerate(totals.items, start=1):
        raw = "\n".join(f"{service}: {quantity:f} {unit}" for service, unit, quantity in item.raw)
        table.add_row(
            escape(item.item),
            escape(raw),
            str(item.accounts),
            f"{item.billable_quantity:f} {escape(item.billable_unit)}",
            f"{item.amount:f}",
            end_section=number == len(totals.items),
        )
    currency = totals.currency
    table.add_row(
        "[bold]traced total[/]",
        f"{totals.records} records",
        str(totals.accounts),
        "",
        f"[bold]{totals.total:f} {currency}[/]",
    )
    table.add_row("stored invoices", "", str(totals.invoices), "", f"{totals.stored_total:f} {currency}")
    if totals.report_total is not None:
        table.add_row("report total", "", "", "", f"{totals.report_total:f} {currency}")
    verdict = (
        "[green]OK: every cent traced[/]"
        if totals.ok
        else f"[red]MISMATCH: {totals.problem_count} difference(s)[/]"
    )
    table.add_row("check", verdict, "", "", "")
    return table
