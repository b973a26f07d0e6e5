"""Declaring what the coordinator owns, idempotently, at start-up (and deleting a namespace's
topology, for the demo and the tests). Connecting is shared plumbing: ``transport``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from contracts import QueueSpec, Topology
from transport.connection import connect
from transport.queues import QueueProbe, declare_exchange, declare_queue

log = logging.getLogger("reckon.coordinator")

DeadLetters = Literal["arguments", "policy"]
"""How a queue gets its dead-letter exchange: an ``x-dead-letter-exchange`` argument on declare
(which RabbitMQ allows only to a user with write on that exchange), or a broker policy
(deploy/dev-infra/rabbitmq/definitions.json), so that no client user may write to ``billing.dlx``."""


async def declare_coordinator_topology(
    channel: AbstractChannel, topology: Topology, *, by_policy: QueueProbe | None = None
) -> None:
    """Every exchange, the period-closed queue, the payment queues and the dead-letter queue.

    ``payments.invoices`` and ``payments.corrections`` are declared here, not by the payment
    service, so no invoice or credit note is dropped before the payment service first connects.

    With ``by_policy`` (``dead_letters = "policy"``), a queue that dead-letters is declared
    without the argument, and one that exists already is kept as it is, looked up through that
    probe: a release that declared it with the argument leaves it so, and the broker would refuse
    to change it in place (it holds invoices: it is never deleted to be declared again).
    """
    for spec in topology.exchanges():
        await declare_exchange(channel, spec)
    for queue in (
        topology.dead_letters_queue,
        topology.period_closed_queue,
        topology.payments_queue,
        topology.corrections_queue,
    ):
        if by_policy is None or queue.dead_letter_exchange is None:
            await declare_queue(channel, queue)
        elif await by_policy.look(queue.name) is None:
            await declare_queue(channel, queue.for_policy())


async def declare_topology_for(
    connection: AbstractConnection, channel: AbstractChannel, topology: Topology, dead_letters: DeadLetters
) -> None:
    """``declare_coordinator_topology`` on ``channel`` as the ``dead_letters`` setting says."""
    if dead_letters == "arguments":
        await declare_coordinator_topology(channel, topology)
        return
    probe = QueueProbe(connection)
    try:
        await declare_coordinator_topology(channel, topology, by_policy=probe)
    finally:
        await probe.close()


async def declare_usage_queues(
    connection: AbstractConnection,
    topology: Topology,
    services: Iterable[str],
    dead_letters: DeadLetters = "arguments",
) -> None:
    """Each configured service's request queue, bound with the service's name as its only key.

    The coordinator declares them, not the sub-services: a service's broker user then needs no
    configure permission at all, so it can neither delete nor redeclare ``billing.usage`` nor bind
    a queue with another service's key (docs/architecture.md, "Who may send what"). A queue an
    earlier version declared with other arguments is left as it is (the broker refuses to change
    a queue in place), with a warning; with ``dead_letters = "policy"`` any queue that exists is
    kept as it is (as ``declare_coordinator_topology`` does).
    """
    probe = QueueProbe(connection) if dead_letters == "policy" else None
    try:
        for service in services:
            spec = topology.usage_queue(service)
            if probe is not None:
                if await probe.look(spec.name) is not None:
                    continue
                spec = spec.for_policy()
            await _declare_or_keep(connection, spec)
    finally:
        if probe is not None:
            await probe.close()


async def _declare_or_keep(connection: AbstractConnection, spec: QueueSpec) -> None:
    channel = await connection.channel()
    try:
        await declare_queue(channel, spec)
    except aio_pika.exceptions.ChannelPreconditionFailed as error:
        log.warning("queue %s exists with other arguments (%s); using it as it is", spec.name, error)
    finally:
        if not channel.is_closed:
            await channel.close()


async def open_coordinator_queue(
    connection: AbstractConnection,
    topology: Topology,
    spec: QueueSpec,
    prefetch: int,
    dead_letters: DeadLetters = "arguments",
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel of its own with ``prefetch``, the coordinator's topology declared, and ``spec``'s queue."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    await declare_topology_for(connection, channel, topology, dead_letters)
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
