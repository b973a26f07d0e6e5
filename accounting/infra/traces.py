"""Which trace a report belongs to, for the messages sent about it (``traceparent``).

A report's trace id is derived from its report id (``observability.tracing.trace_id_for``), so any
process finds it without storage: the relay of another replica, or after a restart. The scheduler
starts revision 1's trace with that very id. Only a ``PeriodClosed`` from another scheduler can
carry a different trace id; the coordinator then keeps it **in memory** (the last
``KEPT`` reports) and uses it for the report's requests and, when the relay runs in the same
process, for its invoices and report event. After a restart that report's later messages carry
the derived id. The outbox has no headers column and needs none.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from uuid import UUID

from observability import logs, tracing
from observability.tracing import TraceContext, trace_id_for

KEPT = 4096
_traces: OrderedDict[UUID, str] = OrderedDict()


def remember(report_id: UUID, context: TraceContext) -> None:
    """Keep a trace id that differs from the report's derived one (from a foreign PeriodClosed)."""
    if context.trace_id == trace_id_for(report_id):
        return
    _traces[report_id] = context.trace_id
    _traces.move_to_end(report_id)
    while len(_traces) > KEPT:
        _traces.popitem(last=False)


def report_trace(report_id: UUID, inherited: TraceContext | None = None) -> TraceContext:
    """A new span of the report's trace: ``inherited`` (what PeriodClosed carried), else the trace
    id kept for it, else the one derived from its id."""
    if inherited is not None:
        remember(report_id, inherited)
        return inherited.child()
    kept = _traces.get(report_id)
    return TraceContext.new(kept) if kept is not None else TraceContext.for_report(report_id)


@contextlib.contextmanager
def report_context(report_id: UUID, **fields: object) -> Iterator[TraceContext]:
    """Work on one report, and the lines logged about it, outside its build: every record logged in
    the block carries ``report_id`` (and ``fields``) and the report's ``trace_id`` (``report_trace``),
    as the lines of its build do. For the relay, the take-over of a report and a decision on a draft."""
    trace = report_trace(report_id)
    with tracing.traced(trace), logs.bound(report_id=report_id, **fields):
        yield trace
