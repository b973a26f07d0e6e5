"""What every ``reckon`` command shares: consoles, options, one-line failures, the store and settings."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from accounting.core.calendar import BillingCalendar, NotAPeriod
from accounting.core.rate_card import RateCard
from accounting.dlq import queue as dlq_queue
from accounting.runtime.app import StoreUnavailable, WrongBrokerUser, open_store
from accounting.runtime.settings import Settings, load_rate_card, load_settings
from accounting.store.repository import ReportStore
from contracts import Period
from observability import logs
from observability.http import HttpSettings, HttpUnavailable
from transport.connection import BrokerUnavailable
from transport.redact import redact_url, scrub, url_secrets
from transport.settings import problems

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="RECKON_CONFIG", help="TOML config file (see config/reckon.toml)."),
]


def fail(message: str) -> NoReturn:
    """One line naming what is wrong, exit 2 (a JSON record with ``"fatal": true`` when the logs
    are JSON)."""
    if not logs.fatal_as_json(message, logger="reckon.cli"):
        errors.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def fatal(error: BaseException) -> NoReturn:
    """An error nobody foresaw, with JSON logs: one record with the traceback as a field, exit 1
    (instead of a page of Rich traceback that a log pipeline splits into hundreds of lines)."""
    logs.fatal_as_json(f"stopped by {type(error).__name__}: {error}", logger="reckon.cli", error=error)
    raise SystemExit(1)


def wants_json_logs() -> bool:
    """``RECKON_LOG_FORMAT=json`` (configured or not yet: a failure before start-up counts too)."""
    try:
        return logs.log_format() == "json"
    except ValueError:
        return False


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """Load settings; a bad value gives one line per problem naming the field, not a traceback.
    The URLs' secrets are hidden from every log line of this process from then on."""
    try:
        settings = load_settings(config, **overrides)
    except ValidationError as error:
        fail(f"configuration{f' {config}' if config else ''}: {problems(error)}")
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    hide_url_secrets(settings)
    return settings


def hide_url_secrets(settings: Settings) -> None:
    """Hide the broker's and the stores' passwords (and whatever else their URLs keep secret) in
    every log line of this process: the coordinator's, the relay's, the scheduler's, the libraries'."""
    urls = (settings.amqp_url, settings.store_url, settings.preview_store_url)
    logs.hide_secrets(*(secret for url in urls if url for secret in url_secrets(url)))


def card_from(settings: Settings) -> RateCard:
    return card_file(settings.rate_card)


def card_file(path: Path) -> RateCard:
    """The rate card in ``path``; a missing or invalid card fails with one line per problem."""
    try:
        return load_rate_card(path)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))


def calendar_period(calendar: BillingCalendar, value: str, param_hint: str = "PERIOD") -> Period:
    """The billing calendar's period named ``value``; anything else is a usage error naming it."""
    try:
        return calendar.period(value)
    except NotAPeriod as error:
        raise typer.BadParameter(str(error), param_hint=param_hint) from None


def closable_period(calendar: BillingCalendar, value: str | None, now: datetime) -> Period:
    """The period named ``value`` (the previous one when None), refused in one line when it may
    not be closed yet: the coordinator would refuse it too, and store the refusal."""
    period = calendar.previous(now) if value is None else calendar_period(calendar, value)
    refusal = calendar.refusal(period, now)
    if refusal is not None:
        fail(refusal)
    return period


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a broker or store that does not answer gives one clear line and exit code 2."""
    try:
        return asyncio.run(coroutine)
    except (
        BrokerUnavailable,
        StoreUnavailable,
        WrongBrokerUser,
        dlq_queue.DeadLettersMissing,
        HttpUnavailable,
    ) as error:
        fail(str(error))


_log_format: list[logs.LogFormat] = ["text"]


def configure_logging(verbose: bool, process: str | None = None) -> None:
    """Text lines (default) or JSON lines (``RECKON_LOG_FORMAT=json``: INFO and above, whatever
    ``verbose`` says, since the console lines of ``announce`` become records too)."""
    try:
        chosen = logs.log_format()
    except ValueError as error:
        fail(str(error))
    level = logging.INFO if verbose or chosen == "json" else logging.WARNING
    _log_format[0] = logs.configure_logging(level, process=process, fmt=chosen)


def json_logs() -> bool:
    """Logs are JSON lines (``RECKON_LOG_FORMAT=json``, set by ``configure_logging``)."""
    return _log_format[0] == "json"


def announce(message: str) -> None:
    """A long-running command's news: a console line, or with JSON logs a record of its own, so
    that a container's output stays one JSON object per line."""
    if _log_format[0] == "json":
        logging.getLogger("reckon.cli").info(message)
    else:
        console.print(message)


def http_settings() -> HttpSettings:
    """``RECKON_HTTP_PORT`` / ``RECKON_HTTP_HOST`` for the operations server; one line if invalid."""
    try:
        return HttpSettings.from_env()
    except ValueError as error:
        fail(str(error))


def signalled() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, installed at once (before a slow start-up)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def store_command(
    config: Path | None, work: Callable[[ReportStore], Awaitable[T]], create: bool = False
) -> T:
    """Open the store named by the settings, run ``work`` on it, close it."""
    settings = settings_from(config)

    async def main() -> T:
        store = await open_store(settings.store_url, create=create)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return run(main())
    except FileNotFoundError as error:
        fail(str(error))
    except (OSError, SQLAlchemyError) as error:
        reason = scrub(str(getattr(error, "orig", None) or error).splitlines()[0], settings.store_url)
        fail(
            f"store {redact_url(settings.store_url)}: {reason} "
            "(is it a Reckon store? `reckon db upgrade` creates one)"
        )
