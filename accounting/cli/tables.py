"""Rich tables for reports and invoices, shared by the CLI commands and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rich.markup import escape
from rich.table import Table

from accounting.core.gather_answers import ServiceState
from accounting.core.report import Aborted
from accounting.service.coordinator import ReportRun
from contracts import AbortReason, InvoiceIssued


def report_table(run: ReportRun) -> Table:
    """One row per configured service: its state, records received and failure reason."""
    status = run.history.status.value.upper()
    table = Table(title=f"Report {run.key.period.period_id} rev {run.key.revision}: {status}")
    table.add_column("service")
    table.add_column("state")
    table.add_column("records", justify="right")
    table.add_column("reason")
    style = {ServiceState.OK: "green", ServiceState.FAILED: "red", ServiceState.WAITING: "yellow"}
    for service, stored in run.carried.items():
        table.add_row(service, "[green]ok[/]", str(stored.records), f"reused from {stored.carried_from}")
    for service, outcome in run.gather.services.items():
        table.add_row(
            service,
            f"[{style[outcome.state]}]{outcome.state.value}[/]",
            str(outcome.records),
            str(outcome.reason.message) if outcome.reason else "",
        )
    if isinstance(run.outcome, Aborted):
        for reason in run.outcome.report.reasons:
            if reason.service is None:
                table.add_row("(report)", "[red]failed[/]", "", f"{reason.code.value}: {reason.message}")
    ignored = {kind.value: count for kind, count in run.gather.ignored.items() if count}
    if ignored:
        table.caption = "ignored replies: " + ", ".join(f"{k}={v}" for k, v in ignored.items())
    return table


def reasons_table(reasons: Sequence[AbortReason]) -> Table:
    table = Table(title="Why the report was aborted")
    table.add_column("service")
    table.add_column("code")
    table.add_column("reason")
    for reason in reasons:
        table.add_row(reason.service or "(report)", reason.code.value, reason.message)
    return table


def invoices_table(invoices: Iterable[InvoiceIssued], title: str = "Invoices") -> Table:
    """One row per invoice with its lines summarised, and the grand total per currency."""
    table = Table(title=title, show_footer=True)
    table.add_column("account", footer="total")
    table.add_column("number", no_wrap=True)
    table.add_column("invoice", no_wrap=True)
    table.add_column("lines", justify="right")
    table.add_column("total", justify="right")
    totals: dict[str, Decimal] = {}
    for invoice in sorted(invoices, key=lambda invoice: invoice.account_id):
        totals[invoice.currency] = totals.get(invoice.currency, Decimal(0)) + invoice.total
        table.add_row(
            invoice.account_id,
            invoice.number or "—",
            str(invoice.invoice_id),
            str(len(invoice.lines)),
            f"{invoice.total} {invoice.currency}",
        )
    table.columns[-1].footer = " + ".join(f"{amount} {currency}" for currency, amount in totals.items())
    return table


def invoice_lines_table(invoice: InvoiceIssued) -> Table:
    number = f"{invoice.number} " if invoice.number else ""
    dates = ""
    if invoice.issued_at is not None and invoice.due_at is not None:
        dates = f", issued {invoice.issued_at:%Y-%m-%d}, due {invoice.due_at:%Y-%m-%d}"
    table = Table(
        title=f"Invoice {number}({invoice.invoice_id}) for {invoice.account_id}{dates}", show_footer=True
    )
    table.add_column("item")
    table.add_column("tier", justify="right")
    table.add_column("quantity", justify="right")
    table.add_column("unit")
    table.add_column("unit price", justify="right")
    table.add_column("amount", justify="right", footer=f"{invoice.total} {invoice.currency}")
    for line in invoice.lines:
        table.add_row(
            line.description,
            "" if line.tier is None else str(line.tier),
            str(line.quantity),
            line.unit,
            str(line.unit_price),
            str(line.amount),
        )
    return table


def reports_list_table(reports: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Reports")
    for column in ("period", "revision", "status", "total", "report_id", "updated"):
        table.add_column(column, justify="right" if column in ("revision", "total") else "left")
    for report in reports:
        total = f"{report['total']} {report['currency']}" if report["total"] is not None else ""
        table.add_row(
            report["period"],
            str(report["revision"]),
            _status(report["status"]),
            total,
            report["report_id"],
            report["updated_at"][:19],
        )
    return table


def refusals_table(refusals: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="PeriodClosed refused by the billing calendar")
    for column in ("period", "requested by", "refused at", "reason"):
        table.add_column(column, overflow="fold")
    for refusal in refusals:
        table.add_row(
            refusal["period"], refusal["requested_by"], refusal["refused_at"][:19], refusal["reason"]
        )
    return table


def report_detail_tables(detail: dict[str, Any]) -> list[Table]:
    total = f"{detail['total']} {detail['currency']}" if detail["total"] is not None else "—"
    card = f", rate card {detail['rate_card_fingerprint']}" if detail["rate_card_fingerprint"] else ""
    title = (
        f"Report {detail['period']} rev {detail['revision']}: {detail['status'].upper()} "
        f"({detail['records']} records, {detail['invoices']} invoices, total {total}{card})"
    )
    services = Table(title=title)
    for column in ("service", "state", "records", "reason"):
        services.add_column(column, justify="right" if column == "records" else "left")
    for service in detail["services"]:
        reason = " ".join(filter(None, [service["reason_code"], service["reason"]]))
        if service["carried_from"]:
            reason = f"reused from {service['carried_from']}"
        services.add_row(service["service"], _status(service["state"]), str(service["records"]), reason)
    history = Table(title="Status history")
    for column in ("at", "status", "reason"):
        history.add_column(column)
    for step in detail["history"]:
        history.add_row(step["at"][:23], _status(step["status"]), step["reason"])
    tables = [services, history]
    if detail["approvals"]:
        decisions = Table(title="Approval")
        for column in ("at", "decision", "by", "reason"):
            decisions.add_column(column)
        for decision in detail["approvals"]:
            decisions.add_row(decision["at"][:23], decision["decision"], decision["by"], decision["reason"])
        tables.append(decisions)
    return tables


def outbox_table(summary: dict[str, Any]) -> Table:
    """``reckon outbox``: the backlog, how long its oldest row has waited, and the last failure."""
    table = Table(title="Outbox")
    table.add_column("pending", justify="right")
    table.add_column("oldest waiting", justify="right")
    table.add_column("being priced", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("last error")
    pending = summary["pending"]
    waited = summary["oldest_pending_seconds"]
    error = summary["last_error"]
    table.add_row(
        f"[yellow]{pending}[/]" if pending else "0",
        "" if waited is None else f"{waited:.0f}s",
        str(summary["staged"]),
        str(summary["sent"]),
        "" if error is None else f"[red]{escape(error)}[/] ({summary['last_error_message_id']})",
    )
    return table


def _status(status: str) -> str:
    colour = {"completed": "green", "ok": "green", "aborted": "red", "failed": "red"}.get(status, "yellow")
    return f"[{colour}]{status}[/]"
