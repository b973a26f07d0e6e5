"""The long-running processes of ``reckon``: ``coordinator``, ``relay``, ``payments`` and ``worker``.

Each runs until SIGTERM (``worker`` becomes the sub-service's own process); with RECKON_HTTP_PORT
the first three serve /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from accounting.app import open_store, start_coordinator
from accounting.broker import broker_user, connect
from accounting.cli_common import (
    ConfigOption,
    announce,
    card_from,
    configure_logging,
    console,
    fail,
    http_settings,
    json_logs,
    run,
    settings_from,
    signalled,
    until_signalled,
)
from accounting.gatherer import utc_now
from accounting.publisher import AmqpEventPublisher
from accounting.relay import OutboxRelay
from accounting.render import invoice_lines_table
from contracts import InvoiceIssued, Topology


def register(app: typer.Typer) -> None:
    """Add ``coordinator``, ``payments``, ``worker`` and ``relay`` to ``reckon``."""
    app.command()(coordinator)
    app.command()(payments)
    app.command()(worker)
    app.command()(relay)


def coordinator(config: ConfigOption = None) -> None:
    """Run the accounting coordinator until SIGTERM: one report per PeriodClosed.

    With RECKON_HTTP_PORT it serves /healthz, /readyz and /metrics (the server starts first, so
    /healthz answers while the store is migrated; /readyz once everything is up).
    """
    from accounting import ops as operations
    from observability.http import start_server

    configure_logging(verbose=True, process="coordinator")
    settings = settings_from(config)
    try:
        settings.require_services()
    except ValueError as error:
        fail(str(error))
    card = card_from(settings)
    http = http_settings()

    async def main() -> None:
        server = await start_server(http)
        try:
            instance = await start_coordinator(settings, card=card)
            dead_letters = None if server is None else operations.watch_coordinator(server, instance)
            announce(
                f"coordinator ready: services {', '.join(settings.services)}, "
                f"deadline {settings.deadline_seconds:g}s, namespace {settings.namespace or '(none)'}"
            )
            try:
                await until_signalled()
            finally:
                if server is not None:
                    server.set_checks({"shutdown": operations.stopping})
                if dead_letters is not None:
                    await dead_letters.close()
                await instance.close()
        finally:
            if server is not None:
                await server.stop()

    run(main())


def payments(
    config: ConfigOption = None,
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file of handled invoices (RECKON_PAYMENTS_DB, var/payments.sqlite3)."),
    ] = None,
) -> None:
    """Run the reference payment consumer: one payment per invoice, however often it is delivered.

    Each invoice is recorded in --db with its payment, in one transaction, before it is acknowledged;
    a restart or a redelivery drops invoices already handled. On SIGTERM it stops taking
    invoices, gives those being handled shutdown_grace_seconds, and gives back the rest; with
    RECKON_HTTP_PORT it serves /healthz, /readyz and /metrics.
    """
    from prometheus_client import REGISTRY

    from accounting.ops import GracefulPaymentConsumer, PaymentMetrics, payments_checks, stopping
    from accounting.payments_store import SqlLedger, record_payment
    from observability.http import start_server

    configure_logging(verbose=False, process="payments")
    settings = settings_from(config, **({"payments_db": db} if db is not None else {}))
    http = http_settings()

    def show(invoice: InvoiceIssued) -> None:
        if json_logs():
            announce(f"invoice {invoice.invoice_id} handled: {invoice.total} {invoice.currency}")
        else:
            console.print(invoice_lines_table(invoice))

    async def main() -> None:
        stop = signalled()
        server = await start_server(http)
        ledger = await SqlLedger.open(settings.payments_db)
        try:
            connection = await connect(settings)
            async with connection:
                consumer = await GracefulPaymentConsumer.begin_consuming(
                    connection,
                    Topology(settings.namespace),
                    show,
                    ledger=ledger,
                    in_transaction=record_payment,
                    publisher=settings.coordinator_user or broker_user(connection),
                )
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
        run(main())
    except (OSError, SQLAlchemyError) as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        fail(f"payments database {settings.payments_db}: {reason}")


def is_worker_program(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"workers.{name}.__main__") is not None
    except ModuleNotFoundError:
        return False


def worker(
    name: Annotated[str, typer.Argument(help="The sub-service: a package under workers/, e.g. compute.")],
    db: Annotated[Path | None, typer.Option(help="Its own SQLite store.")] = None,
) -> None:
    """Run a sub-service (``python -m workers.NAME serve``) in this process."""
    if not name.isidentifier() or not is_worker_program(name):
        fail(f"no sub-service named {name!r}: expected a package workers/{name}/ with a __main__.py")
    arguments = [sys.executable, "-m", f"workers.{name}", "serve", *(["--db", str(db)] if db else [])]
    os.execv(sys.executable, arguments)


def relay(config: ConfigOption = None) -> None:
    """Run only the outbox relay until SIGTERM (when coordinators run with RECKON_RELAY=false).

    With RECKON_HTTP_PORT it serves /healthz, /readyz (broker, store, relay not stalled), /metrics.
    """
    from accounting import ops as operations
    from observability.http import start_server

    configure_logging(verbose=True, process="relay")
    settings = settings_from(config)
    http = http_settings()

    async def main() -> None:
        server = await start_server(http)
        store = await open_store(settings.store_url, busy_timeout=settings.store_busy_timeout_seconds)
        try:
            connection = await connect(settings)
            async with connection:
                publisher = await AmqpEventPublisher.create(
                    connection, Topology(settings.namespace), settings.publish_timeout_seconds
                )
                outbox_relay = OutboxRelay(
                    store,
                    publisher,
                    utc_now,
                    settings.relay_poll_seconds,
                    settings.relay_claim_seconds,
                    window=settings.relay_window,
                )
                stop = asyncio.Event()
                task = asyncio.create_task(outbox_relay.run(stop))
                if server is not None:
                    server.set_checks(operations.relay_checks(connection, store, outbox_relay))
                    operations.watch_outbox(server, store, [outbox_relay.health])
                announce("relay running")
                await until_signalled()
                if server is not None:
                    server.set_checks({"shutdown": operations.stopping})
                stop.set()
                await task
        finally:
            await store.close()
            if server is not None:
                await server.stop()

    run(main())
