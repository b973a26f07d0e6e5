"""``reckon replay PERIOD``: rebuild a period's report as a new revision, or (``--dry-run``) show
what a forced replay would correct, account by account, without issuing or storing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from accounting.cli.common import (
    ConfigOption,
    JsonOption,
    card_file,
    card_from,
    configure_logging,
    console,
    fail,
    print_json,
    run,
    settings_from,
)
from accounting.cli.tables import reasons_table, report_table
from accounting.core.gather import Gather
from accounting.core.report import Aborted
from accounting.runtime.app import start_coordinator
from accounting.runtime.preview import DryRun, NoPreviewStore, dry_run_replay
from accounting.service.coordinator import ReportRun
from accounting.service.replay import ReplayRefused
from accounting.service.replay import replay as replay_period


def register(app: typer.Typer) -> None:
    app.command()(replay)


def replay(
    period: Annotated[str, typer.Argument(help="The period to rebuild, e.g. 2026-10.")],
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only this failed service (repeatable).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Replay a completed period: correct each invoice whose charge changed."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Ask the services again and show which accounts a forced replay would correct and by "
            "how much; nothing is published and no revision is made.",
        ),
    ] = False,
    rate_card: Annotated[
        str | None,
        typer.Option(
            "--rate-card",
            help="Price with this card (a TOML file, or 'current' for the configured one) instead of "
            "the card stored with the revision being replaced.",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild PERIOD's report as a new revision (idempotent: a replay in progress is not doubled).

    The new revision is priced with the rate card of the revision it replaces, so the same replies
    give the same invoices; --rate-card names another one. A forced replay of a completed period
    issues a credit note and a corrected invoice only for an account whose lines or totals changed.
    """
    configure_logging(verbose=False)
    settings = settings_from(config)
    card = card_from(settings)
    replay_card = None if rate_card in (None, "current") else card_file(Path(str(rate_card)))
    if rate_card == "current":
        replay_card = card
    services = tuple(service or ())
    if not services:
        try:
            settings.require_services()
        except ValueError as error:
            fail(str(error))
    answered = [0]

    def on_progress(gather: Gather) -> None:
        if not as_json and gather.answered != answered[0]:
            answered[0] = gather.answered
            console.print(f"services answered: {gather.answered}/{gather.expected}")

    if dry_run:
        if services:
            fail("--dry-run shows what a replay of every service would correct: leave out --service")
        try:
            planned = run(dry_run_replay(settings, period, replay_card, on_progress))
        except (ReplayRefused, NoPreviewStore) as refusal:
            fail(str(refusal))
        show_dry_run(period, planned, as_json)
        return

    async def main() -> ReportRun:
        instance = await start_coordinator(
            settings.model_copy(update={"services": settings.services or services}),
            card=card,
            consume=False,
            background=False,
            on_progress=on_progress,
        )
        try:
            built = await replay_period(instance.coordinator, period, services, force, replay_card)
            await instance.relay.flush()
            return built
        finally:
            await instance.close()

    try:
        built = run(main())
    except ReplayRefused as refusal:
        fail(str(refusal))
    console.print(report_table(built))
    if isinstance(built.outcome, Aborted):
        console.print(reasons_table(built.outcome.report.reasons))
        raise typer.Exit(1)
    summary = built.outcome.report
    console.print(
        f"[green]revision {built.key.revision} of {period} built[/]: {summary.invoice_count} invoices, "
        f"total {summary.total} {summary.currency}"
    )


def dry_run_json(period: str, planned: DryRun) -> dict[str, Any]:
    outcome = planned.preview.run.outcome
    return {
        "period": period,
        "corrects_revision": planned.revision,
        "aborted": isinstance(outcome, Aborted),
        "reasons": [str(reason) for reason in outcome.report.reasons] if isinstance(outcome, Aborted) else [],
        "rate_card": planned.preview.rate_card,
        "accounts": [
            {
                "account_id": item.account_id,
                "action": item.kind,
                "owed_now": str(item.owed_now),
                "owed_after": str(item.owed_after),
                "change": str(item.change),
                "currency": item.currency,
            }
            for item in planned.planned
        ],
        "unchanged": planned.unchanged,
    }


def show_dry_run(period: str, planned: DryRun, as_json: bool) -> None:
    outcome = planned.preview.run.outcome
    if as_json:
        print_json(dry_run_json(period, planned))
    elif isinstance(outcome, Aborted):
        console.print(f"[red]a replay of {period} would abort[/]: nothing would be corrected")
        console.print(reasons_table(outcome.report.reasons))
    else:
        title = f"A forced replay of {period} (correcting revision {planned.revision}) would issue"
        table = Table(title=title)
        for column in ("account", "action", "owed now", "owed after", "change"):
            table.add_column(column, justify="left" if column in ("account", "action") else "right")
        for item in planned.planned:
            table.add_row(
                item.account_id,
                {"corrected": "credit note + corrected invoice", "emptied": "credit note + empty invoice",
                 "new": "first invoice"}[item.kind],
                f"{item.owed_now} {item.currency}",
                f"{item.owed_after} {item.currency}",
                f"{item.change:+} {item.currency}",
            )  # fmt: skip
        console.print(table)
        console.print(
            f"{len(planned.planned)} account(s) would get a document, {planned.unchanged} unchanged; "
            "nothing was published and no revision was made (the preview store keeps the priced run)"
        )
    if isinstance(outcome, Aborted):
        raise typer.Exit(1)
