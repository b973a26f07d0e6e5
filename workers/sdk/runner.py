"""Run one sub-service until SIGTERM or SIGINT: the ``serve`` command of every worker.

On SIGTERM it stops taking requests, gives the answers in flight ``shutdown_grace_seconds`` to
finish, gives back to the queue what it did not acknowledge, closes its connection and exits 0.
With ``RECKON_HTTP_PORT`` it serves ``/healthz``, ``/readyz`` (ready once connected to the broker
and consuming its queue) and ``/metrics``; ``RECKON_LOG_FORMAT=json`` makes its logs JSON lines.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aio_pika.abc import AbstractRobustConnection

from observability import logs
from observability.http import Check, HttpSettings, HttpUnavailable, OpsServer, start_server
from transport.connection import BrokerUnavailable, connect, connected_check
from transport.redact import redact_url
from workers.sdk.responder import Responder
from workers.sdk.service import UsageService
from workers.sdk.settings import WorkerSettings

log = logging.getLogger("reckon.worker")


async def serve(
    service: UsageService, settings: WorkerSettings, stop: asyncio.Event, ops: OpsServer | None = None
) -> None:
    """Serve ``service`` until ``stop`` is set; the robust connection reconnects in between.
    ``ops`` (the operations server) is told what readiness means once the responder exists."""
    connection = await connect(settings)
    try:
        responder = await Responder.create(connection, service, settings)
        if ops is not None:
            ops.set_checks(readiness(connection, responder))
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


def readiness(connection: AbstractRobustConnection, responder: Responder) -> dict[str, Check]:
    """Ready when connected to the broker and consuming the service's queue."""

    async def consuming() -> str | None:
        return None if responder.consuming else "not consuming its queue"

    return {"broker": connected_check(connection), "consuming": consuming}


async def _stopping() -> str:
    return "stopping"


def run_worker(service: UsageService, settings: WorkerSettings | None = None) -> None:
    """Blocking entry point; a broker that does not answer gives one clear line and exit code 2."""
    settings = settings or WorkerSettings()
    try:
        logs.configure_logging(logging.INFO, process=service.name, service=service.name)
        http = HttpSettings.from_env()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        ops = await start_server(http)
        try:
            await serve(service, settings, stop, ops)
        finally:
            if ops is not None:
                await ops.stop()

    try:
        asyncio.run(main())
    except BrokerUnavailable as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    except HttpUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
