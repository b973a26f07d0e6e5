"""The long-running processes of ``reckon``: ``coordinator``, ``relay``, ``payments`` and ``worker``,
and the one-shot ``conformance`` kit.

Each runs until SIGTERM (``worker`` becomes the sub-service's own process); with RECKON_HTTP_PORT
the first three serve /healthz, /readyz and /metrics. ``payments``, ``worker`` and ``conformance``
exec another party's program rather than importing it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.publisher import AmqpEventPublisher
from accounting.cli.common import (
    ConfigOption,
    announce,
    card_from,
    configure_logging,
    fail,
    http_settings,
    run,
    settings_from,
    signalled,
)
from accounting.infra.clock import utc_now
from accounting.runtime.app import open_store, start_coordinator, store_may_come_back, store_problem
from accounting.service.relay import OutboxRelay
from accounting.store.repository import ReportStore
from contracts import Topology
from observability.heap import settle_heap
from transport.connection import Stopped, broker_may_come_back, broker_problem, connect, unless_stopped


def register(app: typer.Typer) -> None:
    """Add ``coordinator``, ``payments``, ``worker``, ``relay`` and ``conformance`` to ``reckon``."""
    app.command()(coordinator)
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
    )(payments)
    app.command()(worker)
    app.command()(relay)
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
    )(conformance)


def coordinator(config: ConfigOption = None) -> None:
    """Run the accounting coordinator until SIGTERM: one report per PeriodClosed.

    With RECKON_HTTP_PORT it serves /healthz, /startupz, /readyz and /metrics (the server starts
    first, so /healthz answers while the store is migrated; /startupz once it is; /readyz once
    everything is up). A store or broker that does not answer yet is waited for, never a restart.
    """
    from accounting.runtime import ops as operations
    from observability.http import start_server
    from observability.startup import Startup

    configure_logging(verbose=True, process="coordinator")
    settings = settings_from(config)
    try:
        settings.require_services()
    except ValueError as error:
        fail(str(error))
    card = card_from(settings)
    http = http_settings()

    async def main() -> None:
        stop = signalled()  # at once: SIGTERM during a slow start (migrations, connecting) stops it
        server = await start_server(http)
        try:
            try:
                startup = Startup(server, alert_after=settings.reconnect_alert_seconds)
                instance = await unless_stopped(start_coordinator(settings, card=card, startup=startup), stop)
            except Stopped:
                announce("coordinator stopped before it was ready")
                return
            dead_letters = None if server is None else operations.watch_coordinator(server, instance)
            settle_heap()
            announce(
                f"coordinator ready: services {', '.join(settings.services)}, "
                f"deadline {settings.deadline_seconds:g}s, namespace {settings.namespace or '(none)'}"
            )
            try:
                await stop.wait()
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


def payments(context: typer.Context) -> None:
    """Run the reference payment consumer (``python -m payments``; ``--help`` for its options).

    It is a party of its own: this process becomes that program, so it loads and exports nothing of
    the coordinator's.
    """
    os.execv(sys.executable, [sys.executable, "-m", "payments", *context.args])


def conformance(context: typer.Context) -> None:
    """Check a running sub-service against the contract (``python -m conformance SERVICE``; ``--help``).

    The conformance kit plays the coordinator over the broker and prints a table of checks; exit 0
    only when every one passed. A party of its own: this process becomes that program.
    """
    os.execv(sys.executable, [sys.executable, "-m", "conformance", *context.args])


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

    With RECKON_HTTP_PORT it serves /healthz, /startupz, /readyz (broker, store, relay not
    stalled), /metrics. A store or broker that does not answer yet is waited for.
    """
    from accounting.runtime import ops as operations
    from observability.http import OpsServer, start_server
    from observability.startup import Startup

    configure_logging(verbose=True, process="relay")
    settings = settings_from(config)
    http = http_settings()

    async def relay_until(stop_signal: asyncio.Event, server: OpsServer | None) -> None:
        startup = Startup(server, alert_after=settings.reconnect_alert_seconds)

        async def opened() -> ReportStore:
            return await open_store(settings.store_url, busy_timeout=settings.store_busy_timeout_seconds)

        async def on_the_broker() -> tuple[AbstractRobustConnection, AmqpEventPublisher]:
            connection = await connect(settings, name="reckon relay")
            try:
                publisher = await AmqpEventPublisher.create(
                    connection,
                    Topology(settings.namespace),
                    settings.publish_timeout_seconds,
                    settings.dead_letters,
                )
            except BaseException:
                await connection.close()
                raise
            return connection, publisher

        store = await unless_stopped(
            startup.wait_for("the store", opened, store_may_come_back, store_problem, holds_startup=True),
            stop_signal,
        )
        try:
            connection, publisher = await unless_stopped(
                startup.wait_for("the broker", on_the_broker, broker_may_come_back, broker_problem),
                stop_signal,
            )
            async with connection:
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
                settle_heap()
                announce("relay running")
                await stop_signal.wait()
                if server is not None:
                    server.set_checks({"shutdown": operations.stopping})
                stop.set()
                await task
        finally:
            await store.close()

    async def main() -> None:
        stop_signal = signalled()  # at once: SIGTERM while opening the store or connecting stops it
        server = await start_server(http)
        try:
            await relay_until(stop_signal, server)
        except Stopped:
            announce("relay stopped before it was ready")
        finally:
            if server is not None:
                await server.stop()

    run(main())
