"""W3C trace context (https://www.w3.org/TR/trace-context/): the ``traceparent`` header.

``traceparent`` is ``00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>``. Reckon records no
spans and needs no collector: the header only ties the messages of one report together across
processes (each hop logs the ``trace_id``) and lets a tracing system that does record spans join in.

A report's trace id is **derived from its report id** (the 32 hex digits of the UUID, see
``trace_id_for``): every process — the scheduler, any coordinator replica, a relay started days
later — finds the same trace id for the same report without storing it anywhere.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

TRACEPARENT = "traceparent"
"""The header name, on AMQP messages as on HTTP requests."""

_HEADER = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_INVALID_TRACE = "0" * 32
_INVALID_PARENT = "0" * 16
SAMPLED = 0x01


@dataclass(frozen=True)
class TraceContext:
    """One ``traceparent``: the trace, the span that sent it (``parent_id``) and the flags."""

    trace_id: str
    parent_id: str
    flags: int = SAMPLED

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", self.trace_id) or self.trace_id == _INVALID_TRACE:
            raise ValueError(f"not a W3C trace id: {self.trace_id!r}")
        if not re.fullmatch(r"[0-9a-f]{16}", self.parent_id) or self.parent_id == _INVALID_PARENT:
            raise ValueError(f"not a W3C parent id: {self.parent_id!r}")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"trace flags are one byte, not {self.flags}")

    @classmethod
    def new(cls, trace_id: str | None = None) -> TraceContext:
        """A new span (random parent id) of ``trace_id``, or of a new random trace."""
        return cls(trace_id or _random_hex(16, _INVALID_TRACE), _random_hex(8, _INVALID_PARENT))

    @classmethod
    def for_report(cls, report_id: UUID | str) -> TraceContext:
        """A new span of the report's own trace (``trace_id_for``)."""
        return cls.new(trace_id_for(report_id))

    def child(self) -> TraceContext:
        """The context this process sends on: same trace and flags, its own span id."""
        return replace(self, parent_id=_random_hex(8, _INVALID_PARENT))

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"

    def headers(self) -> dict[str, Any]:
        """``{"traceparent": ...}``, to merge into a message's headers."""
        return {TRACEPARENT: self.header()}


def trace_id_for(report_id: UUID | str) -> str:
    """The trace id of a report: its UUID's 32 hex digits (never all zero for a UUIDv5)."""
    return UUID(str(report_id)).hex


def parse(header: object) -> TraceContext | None:
    """The ``traceparent`` value, or None when it is missing or invalid (the spec says: ignore it
    and start a new trace). A higher version is read for its first four fields, as the spec asks;
    version ``ff`` is invalid."""
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(header, str):
        return None
    match = _HEADER.match(header.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    try:
        return TraceContext(trace_id, parent_id, int(flags, 16))
    except ValueError:
        return None


def from_headers(headers: Mapping[str, Any] | None) -> TraceContext | None:
    """The trace context of a message's headers (AMQP headers may hold bytes), or None."""
    if not headers:
        return None
    return parse(headers.get(TRACEPARENT))


_current: ContextVar[TraceContext | None] = ContextVar("reckon_trace", default=None)


def current() -> TraceContext | None:
    """The trace context of the work this task is doing (tasks it creates inherit it)."""
    return _current.get()


@contextlib.contextmanager
def traced(context: TraceContext | None) -> Iterator[TraceContext | None]:
    """Make ``context`` current for the block (and for the tasks started inside it)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def _random_hex(size: int, invalid: str) -> str:
    while True:
        value = secrets.token_hex(size)
        if value != invalid:
            return value
