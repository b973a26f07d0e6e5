"""The scheduler's one act: announce that a billing period has closed."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage

from contracts import CONTENT_TYPE, ROUTING_PERIOD_CLOSED, Period, PeriodClosed, Topology, report_id
from observability.tracing import TraceContext
from transport.connection import broker_user
from transport.queues import wait_for_queue


class PeriodNotTaken(RuntimeError):
    """The broker did not route PeriodClosed to the coordinator's queue: nothing was published."""


COORDINATOR_WAIT_SECONDS = 60.0
"""How long the scheduler waits for a coordinator to have declared its topology (a fresh broker, a
coordinator still starting) before it gives up without publishing."""


async def wait_for_coordinator(
    connection: AbstractConnection, topology: Topology, timeout: float = COORDINATOR_WAIT_SECONDS
) -> None:
    """Wait until the coordinator has declared its topology (the period-closed queue, declared after
    every exchange); ``PeriodNotTaken`` after ``timeout``."""
    try:
        await wait_for_queue(connection, topology.period_closed_queue.name, timeout=timeout, poll=0.5)
    except TimeoutError:
        raise PeriodNotTaken(
            f"{topology.period_closed_queue.name} does not exist after {timeout:g}s: start the coordinator "
            "first (it declares the topology), then close the period again"
        ) from None


async def close_period(
    connection: AbstractConnection,
    topology: Topology,
    period: Period,
    requested_by: str,
    wait_seconds: float | None = COORDINATOR_WAIT_SECONDS,
) -> PeriodClosed:
    """Publish PeriodClosed, persistent, mandatory and confirmed.

    The scheduler declares nothing: the coordinator owns the topology (its broker user is the one
    that may configure it), and the scheduler's user may only write to ``billing.periods``. The
    scheduler waits up to ``wait_seconds`` for a coordinator to have declared it (None: the caller
    already did, ``wait_for_coordinator``); a PeriodClosed no queue takes raises
    ``PeriodNotTaken``: nothing is lost silently, the command fails saying to start the
    coordinator first.

    The message carries ``user_id`` (the broker refuses one that is not the connection's user), so
    the coordinator knows who closed the period: only the scheduler's user may.

    It starts the report's trace: ``traceparent`` with the trace id derived from the id of the
    report it asks for (revision 1), so every later message about that report carries the same
    trace id, whichever process sends it (``accounting/infra/traces.py``).
    """
    event = PeriodClosed.for_period(period, requested_by)
    if wait_seconds is not None:
        await wait_for_coordinator(connection, topology, wait_seconds)
    async with connection.channel(publisher_confirms=True) as channel:
        # The period-closed queue exists, so its exchange does: the coordinator declares the
        # exchanges first. Not looked up again.
        exchange = await channel.get_exchange(topology.periods.name, ensure=False)
        returned = await exchange.publish(
            aio_pika.Message(
                event.to_json(),
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"period-closed/{period.period_id}",
                type=PeriodClosed.__name__,
                user_id=broker_user(connection),
                headers=TraceContext.for_report(report_id(period.period_id, 1)).headers(),
            ),
            ROUTING_PERIOD_CLOSED,
            mandatory=True,
            timeout=10,
        )
    if isinstance(returned, DeliveredMessage):
        raise PeriodNotTaken(
            f"no queue took PeriodClosed {period.period_id} ({topology.period_closed_queue.name} does not "
            "exist): start the coordinator first (it declares the topology), then close the period again"
        )
    return event
