"""Run one sub-service until SIGTERM or SIGINT: the ``serve`` command of every worker.

Its settings come from the environment (``WorkerSettings``): a value that is refused (a malformed
``AMQP_URL``, say) gives one line naming the variable, never the password, and exit code 2. The
broker URL's secrets are hidden from every log line of the process (``observability.logs``).

On SIGTERM it stops taking requests, gives the answers in flight ``shutdown_grace_seconds`` to
finish, gives back to the queue what it did not acknowledge, closes its connection and exits 0.
A broker that does not answer at start, or refuses its user for now, is waited for with backoff
(only a setting that can never work, such as a malformed URL, exits). SIGTERM before it is ready
stops it at once, also with 0. With ``RECKON_HTTP_PORT`` it serves ``/healthz``, ``/startupz``,
``/readyz`` (ready once connected to the broker and consuming its queue; 503 naming what it
waits for until then) and ``/metrics``; ``RECKON_LOG_FORMAT=json``
makes its logs JSON lines.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aio_pika.abc import AbstractRobustConnection
from pydantic import ValidationError

from observability import logs
from observability.heap import settle_heap
from observability.http import Check, HttpSettings, HttpUnavailable, OpsServer, start_server
from observability.startup import Startup
from transport.connection import (
    BrokerUnavailable,
    Stopped,
    broker_may_come_back,
    broker_problem,
    connect,
    connected_check,
    unless_stopped,
)
from transport.redact import redact_url, url_secrets
from transport.settings import problems
from workers.sdk.empty import EMPTY_REASON, GuardedService, can_tell_empty, store_is_empty
from workers.sdk.responder import Responder
from workers.sdk.service import UsageService
from workers.sdk.settings import WorkerSettings

log = logging.getLogger("reckon.worker")


async def serve(
    service: UsageService, settings: WorkerSettings, stop: asyncio.Event, ops: OpsServer | None = None
) -> None:
    """Serve ``service`` until ``stop`` is set; the robust connection reconnects in between.
    A broker that does not answer yet, or refuses this user or a permission for now, is waited for
    with backoff (``/readyz`` says why), never an exit. ``ops`` (the operations server) is told what
    readiness means once the responder exists. ``stop`` set while connecting or declaring the
    queue returns at once (nothing was taken)."""
    startup = Startup(ops, alert_after=settings.reconnect_alert_seconds)
    guarded = can_tell_empty(service) and not settings.allow_empty_store
    if guarded:
        if await store_is_empty(service):
            log.warning("service %s starts with an %s", service.name, EMPTY_REASON)
        service = GuardedService(service)

    async def on_the_broker() -> tuple[AbstractRobustConnection, Responder]:
        connection = await connect(settings, name=f"reckon worker {service.name}")
        try:
            return connection, await Responder.create(connection, service, settings)
        except BaseException:
            await connection.close()
            raise

    try:
        connection, responder = await unless_stopped(
            startup.wait_for("the broker", on_the_broker, broker_may_come_back, broker_problem), stop
        )
    except Stopped:
        log.info("service %s stopped before it was consuming its queue", service.name)
        return
    try:
        if ops is not None:
            ops.set_checks(readiness(connection, responder, service if guarded else None))
        settle_heap()
        log.info("service %s ready on %s", service.name, redact_url(settings.amqp_url))
        await stop.wait()
        if ops is not None:
            ops.set_checks({"shutdown": _stopping})
        log.info(
            "service %s stopping: no new requests; %d in flight, up to %gs to finish",
            service.name,
            responder.in_flight,
            settings.shutdown_grace_seconds,
        )
        await responder.close(settings.shutdown_grace_seconds)
    finally:
        await connection.close()


def readiness(
    connection: AbstractRobustConnection, responder: Responder, guarded: UsageService | None = None
) -> dict[str, Check]:
    """Ready when connected to the broker and consuming the service's queue, and (for a guarded
    service, ``workers.sdk.empty``) while its store holds usage."""

    async def consuming() -> str | None:
        return None if responder.consuming else "not consuming its queue"

    checks: dict[str, Check] = {"broker": connected_check(connection), "consuming": consuming}
    if isinstance(guarded, GuardedService):
        inner = guarded.inner

        async def store() -> str | None:
            return EMPTY_REASON if await store_is_empty(inner) else None

        checks["store"] = store
    return checks


async def _stopping() -> str:
    return "stopping"


def _fail(message: str) -> SystemExit:
    """One line naming what is wrong (a JSON record with ``"fatal": true`` when the logs are JSON)."""
    if not logs.fatal_as_json(message, logger=log.name):
        print(f"error: {logs.hidden(message)}", file=sys.stderr)
    return SystemExit(2)


def run_worker(service: UsageService, settings: WorkerSettings | None = None) -> None:
    """Blocking entry point. Settings that are refused, or a broker that does not answer, give
    one clear line (never a password) and exit code 2."""
    try:
        logs.configure_logging(logging.INFO, process=service.name, service=service.name)
        http = HttpSettings.from_env()
    except ValueError as error:
        raise _fail(str(error)) from None
    if settings is None:
        try:
            settings = WorkerSettings()
        except ValidationError as error:
            raise _fail(f"settings of {service.name} (environment): {problems(error)}") from None
    logs.hide_secrets(*url_secrets(settings.amqp_url))
    chosen = settings

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        ops = await start_server(http)
        try:
            await serve(service, chosen, stop, ops)
        finally:
            if ops is not None:
                await ops.stop()

    try:
        asyncio.run(main())
    except (BrokerUnavailable, HttpUnavailable) as error:
        raise _fail(str(error)) from None
    except Exception as error:
        # With JSON logs the traceback is a field of one record, not a page of lines.
        if not logs.fatal_as_json(
            f"stopped by {type(error).__name__}: {error}", logger=log.name, error=error
        ):
            raise
        raise SystemExit(1) from None
