"""``reckon``: the app, ``main`` and the small commands (close-period, demo, inspection, db);
``cli_processes`` (coordinator, relay, payments, worker), ``cli_dlq`` and the other ``cli_*``
modules register the rest."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import aiormq
import typer
from rich.markup import escape

from accounting.amqp.scheduler import PeriodNotTaken, close_period, wait_for_coordinator
from accounting.cli import approval as cli_approval
from accounting.cli import dlq as cli_dlq
from accounting.cli import documents as cli_documents
from accounting.cli import preview as cli_preview
from accounting.cli import processes as cli_processes
from accounting.cli import reconcile as cli_reconcile
from accounting.cli import replay as cli_replay
from accounting.cli.common import (
    ConfigOption,
    JsonOption,
    card_from,
    closable_period,
    configure_logging,
    console,
    errors,
    fail,
    fatal,
    print_json,
    run,
    settings_from,
    store_command,
    wants_json_logs,
)
from accounting.cli.tables import (
    invoice_lines_table,
    invoices_table,
    outbox_table,
    refusals_table,
    report_detail_tables,
    reports_list_table,
)
from accounting.infra.clock import utc_now
from accounting.service.queries import find_report, outbox_summary, report_detail, report_summary
from accounting.store.migrate import SchemaUnknown, current_revision, downgrade
from accounting.store.repository import ReportStore
from contracts import ROUTING_REPORT_ABORTED, ROUTING_REPORT_COMPLETED, Topology
from transport.connection import connect
from transport.redact import redact_url

app = typer.Typer(
    name="reckon",
    help="Reckon: period-end usage reports and invoices, pulled from sub-services over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
)
cli_processes.register(app)
cli_replay.register(app)


@app.command("close-period")
def close_period_command(
    period: Annotated[str | None, typer.Argument(help="The billing month, YYYY-MM.")] = None,
    last_month: Annotated[
        bool,
        typer.Option("--last-month", help="The month before this one in the calendar time zone (a CronJob)."),
    ] = False,
    config: ConfigOption = None,
    requested_by: Annotated[str, typer.Option(help="Who asks, recorded on the event.")] = "operator",
    wait: Annotated[bool, typer.Option(help="Wait for the report and print its outcome.")] = False,
) -> None:
    """Act as the scheduler: publish PeriodClosed for PERIOD, or for last month with --last-month.

    The bounds come from the billing calendar (``calendar_time_zone``); a period that has not
    ended, settling delay included, is refused here and by the coordinator."""
    if (period is None) == (not last_month):
        fail("name the period to close: PERIOD (YYYY-MM) or --last-month, not both")
    settings = settings_from(config)
    billing_period = closable_period(settings.billing_calendar(), period, datetime.now(UTC))
    topology = Topology(settings.namespace)

    async def main() -> dict[str, Any] | None:
        connection = await connect(settings)
        async with connection:
            if not wait:
                await close_period(connection, topology, billing_period, requested_by)
                console.print(f"PeriodClosed {billing_period.period_id} published")
                return None
            # Listening first, so the outcome cannot be missed: a queue of its own bound by name to
            # the coordinator's reports exchange (the scheduler declares nothing of the topology).
            await wait_for_coordinator(connection, topology)
            channel = await connection.channel()
            listener = await channel.declare_queue("", exclusive=True, auto_delete=True)
            for key in (ROUTING_REPORT_COMPLETED, ROUTING_REPORT_ABORTED):
                await listener.bind(topology.reports.name, key)
            await close_period(connection, topology, billing_period, requested_by, wait_seconds=None)
            console.print(f"PeriodClosed {billing_period.period_id} published")
            async with asyncio.timeout(settings.deadline_seconds + 60), listener.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    body: dict[str, Any] = json.loads(message.body)
                    if body.get("period", {}).get("period_id") == billing_period.period_id:
                        return body
        return None

    try:
        report = run(main())
    except TimeoutError:
        if settings.approval == "manual":
            fail(
                f'no report for {billing_period.period_id} was issued: with approval = "manual" it '
                f"waits as a draft (reckon reports show {billing_period.period_id}; reckon reports "
                f"approve {billing_period.period_id})"
            )
        fail(f"no report for {billing_period.period_id} arrived; is a coordinator running?")
    except PeriodNotTaken as error:
        fail(str(error))
    except aiormq.exceptions.AMQPChannelError as error:
        # ACCESS_REFUSED, NOT_FOUND…: the broker's own words name the user and the resource.
        fail(f"the broker refused close-period: {error}")
    if report is None:
        return
    if "reasons" in report:
        errors.print(f"[red]report {report['report_id']} aborted[/]")
        for reason in report["reasons"]:
            errors.print(
                f"  {reason.get('service') or '(report)'}: {reason['code']}: {escape(reason['message'])}"
            )
        raise typer.Exit(1)
    console.print(
        f"[green]report {report['report_id']} completed[/]: {invoice_count(report)} invoices, "
        f"total {report['total']} {report['currency']}"
    )


def invoice_count(report: dict[str, Any]) -> int:
    """ReportCompleted 2.0 carries a count; a 1.x event (from an older coordinator) the list."""
    count = report.get("invoice_count")
    return int(count) if count is not None else len(report.get("invoices") or ())


@app.command()
def demo(
    period: Annotated[str | None, typer.Option(help="Billing month YYYY-MM; default last month.")] = None,
    accounts: Annotated[int, typer.Option(min=1, max=500, help="Accounts in the sample.")] = 40,
    config: ConfigOption = None,
) -> None:
    """Run a whole billing period end to end on the local broker and print the report and invoices."""
    from accounting.cli.demo import demo_namespace, run_demo

    configure_logging(verbose=False)
    overrides: dict[str, Any] = {"namespace": demo_namespace(), "shutdown_grace_seconds": 0}
    if config is None and not os.environ.get("RECKON_SERVICES"):
        overrides["services"] = ("compute", "storage", "network")
    settings = settings_from(config, **overrides)
    calendar, now = settings.billing_calendar(), datetime.now(UTC)
    if period is None and calendar.refusal(calendar.previous(now), now) is not None:
        # Within the settling delay after a month ends: the demo closes the month before it.
        period = calendar.previous(calendar.previous(now).start).period_id
    billing_period = closable_period(calendar, period, now)
    card = card_from(settings)
    console.print(
        f"[bold]Reckon demo[/]: period {billing_period.period_id}, broker {redact_url(settings.amqp_url)}"
    )
    with tempfile.TemporaryDirectory(prefix="reckon-demo-") as workdir:
        if "store_url" not in settings.model_fields_set:
            settings = settings.model_copy(
                update={"store_url": f"sqlite+aiosqlite:///{workdir}/reckon.sqlite3"}
            )
        result = run(run_demo(settings, card, billing_period, accounts, Path(workdir), console))
    if not result.ok:
        raise typer.Exit(1)


cli_preview.register(app)

reports_app = typer.Typer(
    help="Inspect, reconcile, compare and approve stored reports.", no_args_is_help=True
)
app.add_typer(reports_app, name="reports")
cli_reconcile.register(reports_app)
cli_approval.register(reports_app)
invoices_app = typer.Typer(
    help="Inspect stored invoices and credit notes; render them as documents.", no_args_is_help=True
)
app.add_typer(invoices_app, name="invoices")
cli_documents.register(invoices_app)
db_app = typer.Typer(help="The accounting store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
cli_dlq.register(app)


@reports_app.command("list")
def reports_list(
    period: Annotated[str | None, typer.Option(help="Only this period.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every report: period, revision, status, totals."""
    records = store_command(config, lambda store: store.list_reports(period))
    summaries = [report_summary(record) for record in records]
    if as_json:
        print_json(summaries)
    else:
        console.print(reports_list_table(summaries))


@reports_app.command("refused")
def reports_refused(
    period: Annotated[str | None, typer.Option(help="Only this period.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """PeriodClosed events the billing calendar refused (newest first): no report was made."""
    refusals = store_command(config, lambda store: store.refusals(period))
    rows = [
        {
            "period": refusal.period.period_id,
            "start": refusal.period.start.isoformat(),
            "end": refusal.period.end.isoformat(),
            "requested_by": refusal.requested_by,
            "refused_at": refusal.refused_at.isoformat(),
            "reason": refusal.reason,
        }
        for refusal in refusals
    ]
    if as_json:
        print_json(rows)
    else:
        console.print(refusals_table(rows))


@reports_app.command("show")
def reports_show(
    period: Annotated[str, typer.Argument(help="The period, e.g. 2026-10.")],
    revision: Annotated[int | None, typer.Option(min=1, help="A revision; default the newest.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Status history, per-service outcome and reason, record counts, totals."""

    async def work(store: ReportStore) -> dict[str, Any] | None:
        record = await find_report(store, period, revision)
        return None if record is None else await report_detail(store, record)

    detail = store_command(config, work)
    if detail is None:
        fail(f"no report for period {period}" + ("" if revision is None else f" revision {revision}"))
    if as_json:
        print_json(detail)
        return
    for table in report_detail_tables(detail):
        console.print(table)


@invoices_app.command("show")
def invoices_show(
    invoice: Annotated[str | None, typer.Argument(help="An invoice id.")] = None,
    period: Annotated[str | None, typer.Option(help="Every invoice of this period instead.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One invoice with its lines, or the invoices of a period."""
    if (invoice is None) == (period is None):
        fail("name an invoice id, or --period PERIOD")
    try:
        wanted = None if invoice is None else UUID(invoice)
    except ValueError:
        fail(f"{invoice!r} is not an invoice id (a UUID)")
    found = store_command(config, lambda store: store.invoices(invoice_id=wanted, period_id=period))
    if not found:
        fail(f"no invoice {invoice}" if invoice else f"no invoices for period {period}")
    if as_json:
        print_json([item.model_dump(mode="json") for item in found])
    elif invoice is not None:
        console.print(invoice_lines_table(found[0]))
    else:
        console.print(invoices_table(found, title=f"Invoices of {period}"))


@app.command()
def outbox(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The relay's backlog: events waiting (and for how long), events sent, the last failure."""
    status = store_command(config, lambda store: store.outbox_status())
    summary = outbox_summary(status, utc_now())
    if as_json:
        print_json(summary)
    else:
        console.print(outbox_table(summary))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the store's schema (the coordinator also does this at start-up)."""

    async def work(_store: ReportStore) -> None:
        return None

    async def revision(store: ReportStore) -> str | None:
        return await current_revision(store.engine)

    store_command(config, work, create=True)
    console.print(f"store schema is up to date (revision {store_command(config, revision)})")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="The revision to go back to, e.g. 0005.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: the later migrations' tables and columns are dropped.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Undo the migrations after REVISION, for a rollback the expand/contract rule cannot cover.

    A migration refuses to downgrade when that would drop data that cannot be given back (0006:
    invoice series and approvals); the store is then restored from its backup instead."""
    if not yes:
        fail(f"downgrading drops what the migrations after {revision} added; run again with --yes")

    async def work(store: ReportStore) -> str | None:
        await downgrade(store.engine, revision)
        return await current_revision(store.engine)

    try:
        now = store_command(config, work)
    except (SchemaUnknown, RuntimeError) as error:
        fail(str(error))
    console.print(f"store schema is at revision {now}")


def main() -> None:
    if not wants_json_logs():
        app()
        return
    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as error:
        fatal(error)
