"""``reckon preview PERIOD``: what the period's invoices would be, before it closes."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer

from accounting.cli.common import (
    ConfigOption,
    JsonOption,
    calendar_period,
    card_from,
    configure_logging,
    console,
    fail,
    print_json,
    run,
    settings_from,
)
from accounting.cli.tables import invoice_lines_table, invoices_table, reasons_table
from accounting.core.gather import Gather
from accounting.core.report import Aborted
from accounting.runtime.preview import NoPreviewStore, Preview, preview_store_url, run_preview
from transport.redact import redact_url


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)


def preview(
    period: Annotated[str, typer.Argument(help="The period to preview, e.g. 2026-11 (may be open).")],
    account: Annotated[str | None, typer.Option(help="Show only this account's invoice.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Gather and price PERIOD now, exactly as closing it would, and print the invoices; nothing is
    published and the period's reports are not touched (previews are stored apart)."""
    configure_logging(verbose=False)
    settings = settings_from(config)
    card = card_from(settings)
    billing_period = calendar_period(settings.billing_calendar(), period)  # open or not
    try:
        settings.require_services()
        where = redact_url(preview_store_url(settings))
    except (ValueError, NoPreviewStore) as error:
        fail(str(error))
    answered = [0]

    def on_progress(gather: Gather) -> None:
        if not as_json and gather.answered != answered[0]:
            answered[0] = gather.answered
            console.print(f"services answered: {gather.answered}/{gather.expected}")

    result = run(run_preview(settings, card, billing_period, account, on_progress))
    if as_json:
        print_json(preview_json(result, account))
    else:
        show(result, account, where)
    if isinstance(result.run.outcome, Aborted):
        raise typer.Exit(1)


def show(result: Preview, account: str | None, where: str) -> None:
    outcome, key = result.run.outcome, result.run.key
    title = f"Preview {key.revision} of {key.period.period_id}"
    if isinstance(outcome, Aborted):
        console.print(f"[red]{title}: the report would be aborted[/]")
        console.print(reasons_table(outcome.report.reasons))
        return
    if account is not None and not result.invoices:
        console.print(f"{title}: no invoice for account {account}")
    elif account is not None:
        for invoice in result.invoices:
            console.print(invoice_lines_table(invoice))
    else:
        console.print(invoices_table(result.invoices, title=title))
    report = outcome.report
    console.print(
        f"[green]{title}[/]: {report.invoice_count} invoices, total {report.total} {report.currency} "
        f"(rate card {result.rate_card}); nothing was published; kept in the preview store {where}"
    )


def preview_json(result: Preview, account: str | None) -> dict[str, object]:
    outcome, key = result.run.outcome, result.run.key
    data: dict[str, object] = {
        "period": key.period.period_id,
        "preview_revision": key.revision,
        "account": account,
    }
    if isinstance(outcome, Aborted):
        data["status"] = "aborted"
        data["reasons"] = [reason.model_dump(mode="json") for reason in outcome.report.reasons]
        return data
    report = outcome.report
    data.update(
        status="priced",
        currency=report.currency,
        invoice_count=report.invoice_count,
        rate_card=result.rate_card,
        total=str(report.total),
        shown_total=str(sum((invoice.total for invoice in result.invoices), Decimal(0))),
        invoices=[invoice.model_dump(mode="json") for invoice in result.invoices],
    )
    return data
