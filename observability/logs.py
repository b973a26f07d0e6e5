"""Logging for every Reckon process: human-readable lines, or one JSON object per line.

``RECKON_LOG_FORMAT=json`` (the image sets it; compose and Kubernetes too) renders every stdlib
log record as one JSON object per line with structlog: ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``event`` (the message), ``process`` (the role: coordinator, relay, payments, or the
sub-service), ``service`` for a sub-service, whatever is bound in the context where the record was
logged (``report_id``, ``request_id``, ...), ``trace_id`` when a trace context is current
(``observability.tracing``) and ``exception`` with the traceback. ``text`` (the default, for a
terminal and the tests that read process output) keeps the plain ``time level logger message``
lines.

The code keeps logging with the standard library (``logging.getLogger(...).info("... %s", x)``):
structlog only renders, so nothing else had to change; context is bound with ``bound(...)``,
which uses contextvars and so follows the asyncio task (and the tasks it starts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

import structlog

from observability import tracing

LOG_FORMAT_ENV = "RECKON_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LogFormat = Literal["text", "json"]


def log_format(value: str | None = None) -> LogFormat:
    """``RECKON_LOG_FORMAT`` (or ``value``): ``json`` or ``text`` (default). Anything else is an error."""
    chosen = (value if value is not None else os.environ.get(LOG_FORMAT_ENV, "")).strip().lower() or "text"
    if chosen not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV}={chosen!r}: expected json or text")
    return "json" if chosen == "json" else "text"


def configure_logging(
    level: int = logging.INFO,
    *,
    process: str | None = None,
    service: str | None = None,
    fmt: LogFormat | None = None,
    stream: Any = None,
) -> LogFormat:
    """Configure the root logger once (like ``logging.basicConfig``, a no-op when it already has
    handlers, e.g. under pytest); returns the format chosen."""
    chosen = fmt or log_format()
    handler = logging.StreamHandler(stream or sys.stderr)
    if chosen == "json":
        handler.setFormatter(json_formatter(process=process, service=service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    return chosen


def json_formatter(*, process: str | None = None, service: str | None = None) -> logging.Formatter:
    """A stdlib formatter rendering each record as one JSON line (structlog's ProcessorFormatter)."""
    static = {key: value for key, value in (("process", process), ("service", service)) if value}

    def add_static(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            add_trace_id,
            add_static,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def add_trace_id(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current trace's id, unless one is bound explicitly."""
    context = tracing.current()
    if context is not None:
        event.setdefault("trace_id", context.trace_id)
    return event


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Bind ``fields`` (None values left out) to every record logged in this block, in this task
    and the tasks it starts; unbound when the block ends."""
    present = {key: str(value) for key, value in fields.items() if value is not None}
    with structlog.contextvars.bound_contextvars(**present):
        yield


def bind(**fields: object) -> None:
    """Bind ``fields`` for the rest of this task (and tasks started from it): a process's identity."""
    structlog.contextvars.bind_contextvars(
        **{key: str(value) for key, value in fields.items() if value is not None}
    )
