"""``python -m conformance SERVICE`` (also ``reckon conformance SERVICE``): the table, the exit code.

Exit 0 when every check passed, 1 when one failed or could not be judged, 2 when the kit could not
run (a setting refused, the broker unreachable, a queue the user may not declare, a period not
over). Settings as every role reads them: ``AMQP_URL`` (the coordinator's broker user),
``RECKON_NAMESPACE``, ``RECKON_CONFIG`` (its shared keys, and the coordinator's ``service_users``,
``dead_letters``, ``deadline_seconds``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import aio_pika
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conformance.amqp import SetupProblem, last_closed_month, run_conformance
from conformance.model import Result, Status
from conformance.settings import ConformanceSettings
from contracts import Period
from observability import logs
from transport.connection import BrokerUnavailable
from transport.redact import url_secrets
from transport.settings import problems

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
QUIET_LIBRARIES = ("aio_pika", "aiormq")
"""A refused declare closes its channel, which these log as errors: the kit says what it means."""

STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.NOT_CHECKED: "yellow"}
MARK = {Status.PASS: "✓ pass", Status.FAIL: "✗ fail", Status.NOT_CHECKED: "- not checked"}

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
errors = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One line naming what is wrong, exit 2: the kit could not run."""
    errors.print(f"[red]error:[/] {escape(logs.hidden(message))}", soft_wrap=True)
    raise typer.Exit(2)


def table(result: Result) -> Table:
    where = f", namespace {result.namespace}" if result.namespace else ""
    shown = Table(
        title=f"Conformance of {result.service} (period {result.period.period_id}{where})",
        title_justify="left",
        show_lines=False,
    )
    shown.add_column("result", no_wrap=True)
    shown.add_column("check", no_wrap=True)
    shown.add_column("rule")
    shown.add_column("why", overflow="fold")
    for check in result.checks:
        style = STYLE[check.status] if not check.ok or check.status is Status.PASS else "dim"
        shown.add_row(
            f"[{style}]{MARK[check.status]}[/]", check.id, escape(check.title), escape(check.reason)
        )
    return shown


def verdict(result: Result) -> str:
    if result.passed:
        return f"[green]PASS[/]: {result.service} passed every check"
    failures = len(result.failed)
    unjudged = len(result.not_passed) - failures
    parts = [f"{failures} failed"] + ([f"{unjudged} not checked"] if unjudged else [])
    return f"[bold red]FAIL[/]: {result.service}: {', '.join(parts)}"


@app.command()
def conformance(
    service: Annotated[
        str, typer.Argument(help="The sub-service: its name, the routing key of its requests.")
    ],
    period: Annotated[
        str | None, typer.Option(help="The closed month asked for, YYYY-MM (default: last month, UTC).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1, max=3600, help="Each request's deadline, seconds (default: deadline_seconds, 30)."
        ),
    ] = None,
    quiet_seconds: Annotated[
        float,
        typer.Option(
            min=0, max=600, help="How long unsigned and impostors' requests are watched for an answer."
        ),
    ] = 3.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    impostor_url: Annotated[
        str | None,
        typer.Option(
            envvar="RECKON_IMPOSTOR_URL",
            help="An AMQP URL of another broker user: its request must never be answered.",
        ),
    ] = None,
    service_user: Annotated[
        str | None,
        typer.Option(
            help="The broker user the service answers as (default: service_users, else AMQP_URL's)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="RECKON_CONFIG", help="The deployment's reckon.toml."),
    ] = None,
) -> None:
    """Play the coordinator against a running sub-service and check every rule of the contract.

    Connect as the coordinator's broker user (AMQP_URL): a service answers only its requests.
    Exit 0 when every check passed, 1 when one did not, 2 when the checks could not run.
    """
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.CRITICAL)
    if not SERVICE_NAME.match(service) or len(service) > 64:
        fail(f"{service!r} is not a service name (lower case letters, digits and -, from a letter)")
    try:
        asked = Period.month(period) if period else last_closed_month()
    except ValueError as error:
        fail(f"--period: {error}")
    if config is not None:
        os.environ["RECKON_CONFIG"] = str(config)
    try:
        settings = ConformanceSettings()
    except ValidationError as error:
        fail(f"settings: {problems(error)}")
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    logs.hide_secrets(*url_secrets(settings.amqp_url), *(url_secrets(impostor_url) if impostor_url else ()))
    work = run_conformance(
        service,
        settings=settings,
        period=asked,
        timeout=timeout,
        quiet=quiet_seconds,
        service_user=service_user,
        impostor_url=impostor_url,
    )
    try:
        result = asyncio.run(work)
    except (SetupProblem, BrokerUnavailable) as error:
        fail(str(error))
    except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as error:
        fail(f"the broker connection failed while checking: {type(error).__name__}: {error}")
    if json_output:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(table(result))
        console.print(verdict(result))
    raise typer.Exit(0 if result.passed else 1)


def main() -> None:
    app()
