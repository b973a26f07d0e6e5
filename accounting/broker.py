"""Connecting to RabbitMQ and declaring what the coordinator owns, idempotently, at start-up."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from contracts import ExchangeSpec, QueueSpec, Topology
from contracts.broker import broker_unavailable, redact_url, scrub

CONNECT_ERRORS = (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ did not answer; the message says where and how to start it."""


class BrokerSettings(Protocol):
    """What ``connect`` needs of the settings: the URL and the TLS files (``accounting.settings``)."""

    @property
    def amqp_url(self) -> str: ...
    @property
    def tls_ca_file(self) -> Path | None: ...
    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...


def tls_context(
    url: str, ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | None:
    """None for ``amqp://``; for ``amqps://`` a context that verifies the broker's certificate and
    host name against ``ca_file`` (the system's CAs when None), TLS 1.2 at least, presenting
    ``cert_file``/``key_file`` when given (mutual TLS). A file that cannot be loaded raises
    ``BrokerUnavailable`` naming the setting."""
    if not url.lower().startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise BrokerUnavailable(
            f"tls_ca_file {ca_file}: cannot load it as PEM CA certificates ({error})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise BrokerUnavailable(
                f"tls_cert_file {cert_file} / tls_key_file {key_file}: cannot load them as a PEM "
                f"certificate and its private key ({error})"
            ) from None
    return context


async def connect(
    target: str | BrokerSettings, connect_timeout: float = 10.0, name: str | None = None
) -> AbstractRobustConnection:
    """A robust connection to the broker at ``target`` (a URL, or the settings, which also give the
    TLS files for an ``amqps://`` URL). A broker that does not answer raises ``BrokerUnavailable``,
    whose message names the URL without its password."""
    if isinstance(target, str):
        url, context = target, tls_context(target)
    else:
        url = target.amqp_url
        context = tls_context(url, target.tls_ca_file, target.tls_cert_file, target.tls_key_file)
    try:
        return await aio_pika.connect_robust(
            url,
            timeout=connect_timeout,
            ssl_context=context,
            client_properties=None if name is None else {"connection_name": name},
        )
    except ssl.SSLError as error:
        raise BrokerUnavailable(
            f"TLS to AMQP_URL={redact_url(url)} failed ({scrub(str(error), url)}): check tls_ca_file "
            "against the broker's certificate and host name, and tls_cert_file / tls_key_file"
        ) from None
    except CONNECT_ERRORS as error:
        # ``from None``: the cause's text is in the message, scrubbed; a chained cause is not.
        raise BrokerUnavailable(broker_unavailable(url, error)) from None
    except ValueError as error:  # the URL itself (yarl)
        raise BrokerUnavailable(
            f"AMQP_URL={redact_url(url)} is not a valid amqp:// or amqps:// URL ({scrub(str(error), url)})"
        ) from None


def broker_user(connection: AbstractConnection) -> str:
    """The user name a connection logged in as: what the broker checks ``user_id`` against."""
    url = getattr(connection, "url", None)
    return str(getattr(url, "user", None) or "guest")


async def declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> AbstractExchange:
    return await channel.declare_exchange(spec.name, spec.kind, durable=True)


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    exchange = await declare_exchange(channel, spec.exchange)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    for routing_key in (spec.routing_key, *spec.also_bound):
        await queue.bind(exchange, routing_key=routing_key)
    return queue


async def declare_coordinator_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Every exchange, the period-closed queue, the payment queues and the dead-letter queue.

    ``payments.invoices`` and ``payments.corrections`` are declared here, not by the payment
    service, so no invoice or credit note is dropped before the payment service first connects.
    Usage queues belong to the sub-services.
    """
    for spec in topology.exchanges():
        await declare_exchange(channel, spec)
    for queue in (
        topology.dead_letters_queue,
        topology.period_closed_queue,
        topology.payments_queue,
        topology.corrections_queue,
    ):
        await declare_queue(channel, queue)


async def delete_topology(channel: AbstractChannel, topology: Topology, services: Iterable[str]) -> None:
    """Delete a namespace's queues and exchanges (demo and test clean-up); never the bare namespace."""
    if not topology.namespace:
        raise ValueError("refusing to delete the un-prefixed topology")
    queues = [
        topology.period_closed_queue,
        topology.payments_queue,
        topology.corrections_queue,
        topology.dead_letters_queue,
        *(topology.usage_queue(service) for service in services),
    ]
    for queue in queues:
        await channel.queue_delete(queue.name)
    for exchange in topology.exchanges():
        await channel.exchange_delete(exchange.name)


async def delete_namespace(url: str, topology: Topology, services: Iterable[str]) -> None:
    """Connect and delete a namespace's queues and exchanges (demo and test clean-up)."""
    connection = await connect(url)
    async with connection:
        await delete_topology(await connection.channel(), topology, services)


class QueueConsumer:
    """Consumes one of the queues the coordinator owns, on a channel of its own.

    Subclasses implement ``on_message``; ``stop`` cancels the consumer and closes the channel and
    is safe to call twice.
    """

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._tag: str | None = None

    @staticmethod
    async def open_queue(
        connection: AbstractConnection, topology: Topology, spec: QueueSpec, prefetch: int
    ) -> tuple[AbstractChannel, AbstractQueue]:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        await declare_coordinator_topology(channel, topology)
        return channel, await channel.get_queue(spec.name)

    @property
    def closed(self) -> bool:
        """The consumer's channel is closed (a robust channel may still be reopening it)."""
        return self._channel.is_closed

    async def begin(self) -> None:
        self._tag = await self._queue.consume(self.on_message)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._tag is not None and not self._channel.is_closed:
            await self._queue.cancel(self._tag)
        self._tag = None
        if not self._channel.is_closed:
            await self._channel.close()
