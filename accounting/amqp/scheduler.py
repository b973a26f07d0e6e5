"""The scheduler's one act: announce that a billing period has closed."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection

from contracts import CONTENT_TYPE, ROUTING_PERIOD_CLOSED, Period, PeriodClosed, Topology, report_id
from observability.tracing import TraceContext
from transport.queues import declare_exchange, declare_queue


async def close_period(
    connection: AbstractConnection, topology: Topology, period: Period, requested_by: str
) -> PeriodClosed:
    """Publish PeriodClosed, persistent and confirmed; the queue is declared first so it is never lost.

    Only what the scheduler needs is declared (the periods exchange and the period-closed queue),
    which is all its broker user may configure in deploy/.

    It starts the report's trace: ``traceparent`` with the trace id derived from the id of the
    report it asks for (revision 1), so every later message about that report carries the same
    trace id, whichever process sends it (``accounting/infra/traces.py``).
    """
    event = PeriodClosed.for_period(period, requested_by)
    async with connection.channel(publisher_confirms=True) as channel:
        exchange = await declare_exchange(channel, topology.periods)
        await declare_queue(channel, topology.period_closed_queue)
        await exchange.publish(
            aio_pika.Message(
                event.to_json(),
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"period-closed/{period.period_id}",
                type=PeriodClosed.__name__,
                headers=TraceContext.for_report(report_id(period.period_id, 1)).headers(),
            ),
            ROUTING_PERIOD_CLOSED,
            mandatory=True,
            timeout=10,
        )
    return event
