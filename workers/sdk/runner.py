"""Run one sub-service until SIGTERM or SIGINT: the ``serve`` command of every worker."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import aio_pika

from contracts.broker import broker_unavailable, redact_url
from workers.sdk.responder import Responder
from workers.sdk.service import UsageService
from workers.sdk.settings import WorkerSettings
from workers.sdk.tls import tls_context

log = logging.getLogger("reckon.worker")

CONNECT_ERRORS = (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError)


async def serve(service: UsageService, settings: WorkerSettings, stop: asyncio.Event) -> None:
    """Serve ``service`` until ``stop`` is set; the robust connection reconnects in between."""
    connection = await aio_pika.connect_robust(
        settings.amqp_url, timeout=10, ssl_context=tls_context(settings)
    )
    try:
        responder = await Responder.create(connection, service, settings)
        log.info("service %s ready on %s", service.name, redact_url(settings.amqp_url))
        await stop.wait()
        await responder.close()
    finally:
        await connection.close()


def run_worker(service: UsageService, settings: WorkerSettings | None = None) -> None:
    """Blocking entry point; a broker that does not answer gives one clear line and exit code 2."""
    settings = settings or WorkerSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(service, settings, stop)

    try:
        asyncio.run(main())
    except CONNECT_ERRORS as error:
        print(broker_unavailable(settings.amqp_url, error), file=sys.stderr)
        raise SystemExit(2) from None
