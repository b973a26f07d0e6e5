"""``python -m payments`` (and ``reckon payments``): run the reference payment consumer until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from contracts import InvoiceIssued, Topology
from observability import logs
from observability.http import HttpSettings, HttpUnavailable, start_server
from observability.startup import Startup
from payments.ledger import SqlLedger, record_payment
from payments.process import GracefulPaymentConsumer, PaymentMetrics, payments_checks, stopping
from payments.settings import PaymentSettings, load_payment_settings
from transport.connection import (
    BrokerUnavailable,
    Stopped,
    broker_may_come_back,
    broker_problem,
    broker_user,
    connect,
    unless_stopped,
)
from transport.redact import url_secrets
from transport.settings import problems

console = Console()
errors = Console(stderr=True)
log = logging.getLogger("reckon.payments")


def fail(message: str) -> NoReturn:
    if not logs.fatal_as_json(message, logger="reckon.payments"):
        errors.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def settings_from(config: Path | None, **overrides: Any) -> PaymentSettings:
    """Load settings; a bad value gives one line per problem naming the field, not a traceback.
    The broker URL's secrets are hidden from every log line of this process from then on."""
    try:
        settings = load_payment_settings(config, **overrides)
    except ValidationError as error:
        fail(f"configuration{f' {config}' if config else ''}: {problems(error)}")
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    logs.hide_secrets(*url_secrets(settings.amqp_url))
    return settings


def payments(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="RECKON_CONFIG", help="TOML config file (its broker keys are read)."
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file of handled invoices (RECKON_PAYMENTS_DB, var/payments.sqlite3)."),
    ] = None,
) -> None:
    """Run the reference payment consumer: one payment per invoice, however often it is delivered.

    Each invoice is recorded in --db with its payment, in one transaction, before it is acknowledged;
    a restart or a redelivery drops invoices already handled. On SIGTERM it stops taking
    invoices, gives those being handled shutdown_grace_seconds, and gives back the rest. A broker
    that does not answer at start, or refuses its user for now, is waited for (SIGTERM meanwhile
    stops it at once); with RECKON_HTTP_PORT it serves /healthz, /startupz, /readyz and /metrics.
    """
    try:
        chosen = logs.log_format()
        http = HttpSettings.from_env()
    except ValueError as error:
        fail(str(error))
    # JSON lines carry the announcements as INFO records; text shows them on the console instead.
    level = logging.INFO if chosen == "json" else logging.WARNING
    json_logs = logs.configure_logging(level, process="payments", fmt=chosen) == "json"
    settings = settings_from(config, **({"payments_db": db} if db is not None else {}))

    def announce(message: str) -> None:
        if json_logs:
            log.info(message)
        else:
            console.print(message)

    def show(invoice: InvoiceIssued) -> None:
        announce(
            f"invoice {invoice.invoice_id} handled: {invoice.account_id}, {len(invoice.lines)} lines, "
            f"{invoice.total} {invoice.currency}"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await start_server(http)
        ledger = await SqlLedger.open(settings.payments_db)
        startup = Startup(server, alert_after=settings.reconnect_alert_seconds)

        async def on_the_broker() -> tuple[AbstractRobustConnection, GracefulPaymentConsumer]:
            connection = await connect(settings, name="reckon payments")
            try:
                consumer = await GracefulPaymentConsumer.begin_consuming(
                    connection,
                    Topology(settings.namespace),
                    show,
                    ledger=ledger,
                    in_transaction=record_payment,
                    prefetch=settings.prefetch,
                    publisher=settings.coordinator_user or broker_user(connection),
                )
            except BaseException:
                await connection.close()
                raise
            return connection, consumer

        try:
            # SIGTERM while waiting for the broker stops at once: nothing was taken yet.
            connection, consumer = await unless_stopped(
                startup.wait_for("the broker", on_the_broker, broker_may_come_back, broker_problem), stop
            )
            async with connection:
                counters = PaymentMetrics(consumer)
                REGISTRY.register(counters)
                if server is not None:
                    server.set_checks(payments_checks(connection, consumer))
                announce(
                    f"payment consumer waiting for invoices (Ctrl-C to stop); handled invoices in "
                    f"{settings.payments_db}: {await ledger.count()}"
                )
                await stop.wait()
                if server is not None:
                    server.set_checks({"shutdown": stopping})
                await consumer.drain(settings.shutdown_grace_seconds)
                REGISTRY.unregister(counters)
                announce(
                    f"{len(consumer.invoices)} invoices handled, {consumer.duplicates} duplicates dropped, "
                    f"{consumer.failures} handler failures ({consumer.parked} parked in dead letters)"
                )
        finally:
            await ledger.close()
            if server is not None:
                await server.stop()

    try:
        asyncio.run(main())
    except Stopped:
        announce("payment consumer stopped before it was consuming: no invoice was taken")
    except (BrokerUnavailable, HttpUnavailable) as error:
        fail(str(error))
    except (OSError, SQLAlchemyError) as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        fail(f"payments database {settings.payments_db}: {reason}")


def main() -> None:
    typer.run(payments)
