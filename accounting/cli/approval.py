"""``reckon reports approve|reject|diff PERIOD``: the review of a period's draft.

With ``approval = "manual"`` a priced report waits as a draft; a reviewer compares it with the
month before (``diff``), reconciles it (``reports reconcile``), renders its documents (marked
DRAFT), then approves it (numbers and dates its documents and lets them go out) or rejects it with
a reason (the report is aborted; a replay builds the period again).
"""

from __future__ import annotations

import getpass
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from accounting.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    fail,
    print_json,
    settings_from,
    store_command,
)
from accounting.core.calendar import NotAPeriod
from accounting.core.diff import Change
from accounting.infra.clock import utc_now
from accounting.service.approval import Approved, CannotDecide, approve, reject
from accounting.service.period_diff import DiffedPeriods, NothingToDiff, diff_period
from accounting.store.repository import ReportRecord, ReportStore

RevisionOption = Annotated[
    int | None, typer.Option(min=1, help="The draft's revision; default the period's newest.")
]
ByOption = Annotated[
    str | None,
    typer.Option(
        "--by", help="Who decides (stored with the decision); default the OS user.", show_default=False
    ),
]


def register(reports_app: typer.Typer) -> None:
    reports_app.command("approve")(approve_command)
    reports_app.command("reject")(reject_command)
    reports_app.command("diff")(diff_command)


def approve_command(
    period: Annotated[str, typer.Argument(help="The period whose draft to approve, e.g. 2026-10.")],
    revision: RevisionOption = None,
    by: ByOption = None,
    note: Annotated[str, typer.Option("--note", help="Stored with the approval.")] = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a draft: its invoices and credit notes get their numbers and dates and go out."""
    settings = settings_from(config)
    who = _who(by)

    async def work(store: ReportStore) -> Approved:
        return await approve(
            store,
            period,
            by=who,
            numbering=settings.numbering(),
            at=utc_now(),
            revision=revision,
            reason=note,
        )

    approved = _decide(config, work)
    ranges = [{"first": first, "last": last} for first, last in approved.issued.ranges]
    if as_json:
        print_json(
            {
                "period": period,
                "revision": approved.record.revision,
                "report_id": str(approved.record.report_id),
                "approved_by": who,
                "invoices": approved.issued.invoices,
                "credit_notes": approved.issued.credit_notes,
                "numbers": ranges,
            }
        )
        return
    numbers = ", ".join(f"{span['first']} … {span['last']}" for span in ranges) or "nothing to number"
    console.print(
        f"period {escape(period)} revision {approved.record.revision} approved by {escape(who)}: "
        f"{approved.issued.invoices} invoices, {approved.issued.credit_notes} credit notes "
        f"({escape(numbers)}); the relay sends them now"
    )


def reject_command(
    period: Annotated[str, typer.Argument(help="The period whose draft to reject.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required; stored and sent with ReportAborted).")
    ],
    revision: RevisionOption = None,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Reject a draft: the report is aborted with the reason, nothing is numbered or sent; a replay
    builds the period again."""
    who = _who(by)

    async def work(store: ReportStore) -> ReportRecord:
        return await reject(store, period, by=who, reason=reason, at=utc_now(), revision=revision)

    record = _decide(config, work)
    console.print(
        f"period {escape(period)} revision {record.revision} rejected by {escape(who)}: {escape(reason)}; "
        f"replay it with `reckon replay {escape(period)}` once the cause is fixed"
    )


def diff_command(
    period: Annotated[str, typer.Argument(help="The period to compare with the month before.")],
    revision: Annotated[
        int | None, typer.Option(min=1, help="A revision; default the draft or newest issued.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare a period's draft (or issued report) with the month before: accounts new and gone,
    totals per item and in all with their change, and the largest movers."""
    settings = settings_from(config)

    async def work(store: ReportStore) -> DiffedPeriods:
        return await diff_period(store, settings.billing_calendar(), period, revision)

    try:
        diffed = store_command(config, work)
    except (NothingToDiff, NotAPeriod) as error:
        fail(str(error))
    data = diff_json(diffed)
    if as_json:
        print_json(data)
        return
    for table in diff_tables(data):
        console.print(table)


def diff_json(diffed: DiffedPeriods) -> dict[str, Any]:
    diff = diffed.diff
    return {
        "period": diffed.record.period.period_id,
        "revision": diffed.record.revision,
        "status": diffed.record.status.value,
        "previous_period": diffed.previous_period,
        "previous_revision": None if diffed.previous is None else diffed.previous.revision,
        "currency": diff.currency,
        "currencies": list(diff.currencies),
        "accounts": {"before": diff.accounts_before, "now": diff.accounts_now},
        "new_accounts": {"count": diff.new_count, "first": list(diff.new_accounts)},
        "gone_accounts": {"count": diff.gone_count, "first": list(diff.gone_accounts)},
        "total": _change_json(diff.total),
        "items": [_change_json(item) for item in diff.items],
        "largest_movers": [_change_json(mover) for mover in diff.movers],
    }


def diff_tables(data: dict[str, Any]) -> list[Table]:
    currency = data["currency"] or ""
    title = (
        f"{data['period']} rev {data['revision']} ({data['status']}) against {data['previous_period']}"
        + ("" if data["previous_revision"] is None else f" rev {data['previous_revision']}")
    )
    summary = Table(title=title)
    for column in ("", "before", "now", "change"):
        summary.add_column(column, justify="right" if column else "left")
    accounts = data["accounts"]
    summary.add_row(
        "accounts",
        str(accounts["before"]),
        str(accounts["now"]),
        _signed(accounts["now"] - accounts["before"]),
    )
    summary.add_row(f"total {currency}", *_change_cells(data["total"]))
    summary.add_row("new accounts", "", str(data["new_accounts"]["count"]), _first(data["new_accounts"]))
    summary.add_row("gone accounts", str(data["gone_accounts"]["count"]), "", _first(data["gone_accounts"]))
    if len(data["currencies"]) > 1:
        summary.caption = (
            f"[yellow]invoices in several currencies ({', '.join(data['currencies'])}): totals mix them[/]"
        )
    items = Table(title=f"Per item ({currency})")
    movers = Table(title=f"Largest movers ({currency})")
    for table, name in ((items, "item"), (movers, "account")):
        table.add_column(name)
        for column in ("before", "now", "change", "%"):
            table.add_column(column, justify="right")
    for item in data["items"]:
        items.add_row(escape(item["name"]), *_change_cells(item), _percent(item))
    for mover in data["largest_movers"]:
        movers.add_row(escape(mover["name"]), *_change_cells(mover), _percent(mover))
    return [summary, items, movers]


def _decide(config: Any, work: Any) -> Any:
    try:
        return store_command(config, work)
    except CannotDecide as error:
        fail(str(error))


def _who(by: str | None) -> str:
    if by is not None:
        if not by.strip():
            fail("--by must name someone")
        return by.strip()[:255]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        fail("cannot tell who you are: name yourself with --by")


def _change_json(change: Change) -> dict[str, Any]:
    percent = change.percent
    return {
        "name": change.name,
        "before": str(change.before),
        "now": str(change.now),
        "change": str(change.change),
        "percent": None if percent is None else str(percent),
    }


def _change_cells(change: dict[str, Any]) -> tuple[str, str, str]:
    return change["before"], change["now"], _signed(Decimal(change["change"]))


def _percent(change: dict[str, Any]) -> str:
    return "new" if change["percent"] is None else f"{_signed(Decimal(change['percent']))}%"


def _signed(value: Decimal | int) -> str:
    return f"+{value}" if value > 0 else str(value)


def _first(accounts: dict[str, Any]) -> str:
    """Up to five of the accounts, and how many more there are."""
    names, count = accounts["first"][:5], accounts["count"]
    more = f" and {count - len(names)} more" if count > len(names) else ""
    return escape(", ".join(names) + more)
