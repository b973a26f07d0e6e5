"""What goes in and out of the gather machine: the events the shell feeds it (``GatherEvent``),
each carrying the time it happened, and the actions it hands back for the shell to store
(``Action``).

Plain frozen data, no behaviour: the machine itself is in ``gather``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import CONTENT_TYPE, UsageReply


@dataclass(frozen=True)
class ReplyReceived:
    """A message arrived on the reply queue; ``user_id`` is the broker-verified sender, if set."""

    correlation_id: str | None
    body: bytes
    at: datetime
    user_id: str | None = None
    content_type: str | None = CONTENT_TYPE
    content_encoding: str | None = None
    """The message's properties: a reply is uncompressed ``application/json``, or invalid."""


@dataclass(frozen=True)
class RequestReturned:
    """The broker returned a mandatory request: no queue is bound for that service."""

    correlation_id: str
    reply_text: str
    at: datetime


@dataclass(frozen=True)
class DeadlinePassed:
    at: datetime


@dataclass(frozen=True)
class TransportLost:
    """The connection or the reply channel closed: replies can no longer arrive."""

    reason: str
    at: datetime


@dataclass(frozen=True)
class ChunkRefused:
    """The store refused a chunk this machine accepted (it repeats records of the same answer)."""

    service: str
    message: str
    at: datetime


@dataclass(frozen=True)
class NoConsumer:
    """The service's queue exists but nothing consumes it: the request would wait to its deadline."""

    correlation_id: str
    queue: str
    at: datetime


GatherEvent = ReplyReceived | RequestReturned | NoConsumer | DeadlinePassed | TransportLost | ChunkRefused


@dataclass(frozen=True)
class StoreChunk:
    """Write this accepted chunk (its raw body and its records) to the store."""

    service: str
    request_id: str
    reply: UsageReply
    body: bytes


@dataclass(frozen=True)
class DropAnswer:
    """Forget what was stored of this service's answer: it answered again (a new answer id)."""

    service: str


@dataclass(frozen=True)
class KeepBody:
    """Keep this body of a reply that failed its service, for the audit; it is not usage."""

    service: str
    request_id: str
    body: bytes


Action = StoreChunk | KeepBody | DropAnswer
