"""Declaring what the coordinator owns, idempotently, at start-up (and deleting a namespace's
topology, for the demo and the tests). Connecting is shared plumbing: ``transport``."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from contracts import QueueSpec, Topology
from transport.connection import connect
from transport.queues import declare_exchange, declare_queue

log = logging.getLogger("reckon.coordinator")


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


async def declare_usage_queues(
    connection: AbstractConnection, topology: Topology, services: Iterable[str]
) -> None:
    """Each configured service's request queue, bound with the service's name as its only key.

    The coordinator declares them, not the sub-services: a service's broker user then needs no
    configure permission at all, so it can neither delete nor redeclare ``billing.usage`` nor bind
    a queue with another service's key (docs/architecture.md, "Who may send what"). A queue an
    earlier version declared with other arguments is left as it is (the broker refuses to change
    a queue in place), with a warning.
    """
    for service in services:
        spec = topology.usage_queue(service)
        channel = await connection.channel()
        try:
            await declare_queue(channel, spec)
        except aio_pika.exceptions.ChannelPreconditionFailed as error:
            log.warning("queue %s exists with other arguments (%s); using it as it is", spec.name, error)
        finally:
            if not channel.is_closed:
                await channel.close()


async def open_coordinator_queue(
    connection: AbstractConnection, topology: Topology, spec: QueueSpec, prefetch: int
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel of its own with ``prefetch``, the coordinator's topology declared, and ``spec``'s queue."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    await declare_coordinator_topology(channel, topology)
    return channel, await channel.get_queue(spec.name)


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
