"""The gather state machine: expected services, a deadline and replies in; outcomes out.

Sans-I/O: the aio-pika shell feeds it events (each carrying the time it happened) and reads its
state; nothing here sleeps, publishes or reads a clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from contracts import AbortCode, AbortReason, UsageRecord, UsageReply


@dataclass(frozen=True)
class ReplyReceived:
    """A message arrived on the reply queue."""

    correlation_id: str | None
    body: bytes
    at: datetime


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


GatherEvent = ReplyReceived | RequestReturned | DeadlinePassed | TransportLost


class ServiceState(StrEnum):
    WAITING = "waiting"
    OK = "ok"
    FAILED = "failed"


class Ignored(StrEnum):
    """Why a reply was dropped without affecting the report."""

    LATE = "late"
    DUPLICATE = "duplicate"
    UNKNOWN_CORRELATION = "unknown_correlation"


class GatherStatus(StrEnum):
    GATHERING = "gathering"
    COMPLETE = "complete"
    ABORTED = "aborted"


@dataclass
class ServiceOutcome:
    """Everything known about one configured service in this gather."""

    service: str
    request_id: str
    state: ServiceState = ServiceState.WAITING
    reason: AbortReason | None = None
    chunks: dict[int, UsageReply] = field(default_factory=dict)
    raw_replies: list[bytes] = field(default_factory=list)

    @property
    def records(self) -> tuple[UsageRecord, ...]:
        return tuple(record for seq in sorted(self.chunks) for record in self.chunks[seq].records)


class Gather:
    """One report's gather. Fail fast: the first failure settles the report as aborted.

    Failures that arrive for still-waiting services after the abort (more returned requests, say)
    are still recorded, so the aborted report names every reason known when it is published.
    """

    def __init__(self, requests: Mapping[str, str], deadline: datetime) -> None:
        """``requests`` maps each configured service to the request id (correlation id) sent to it."""
        if not requests:
            raise ValueError("a gather needs at least one configured service")
        self.deadline = deadline
        self.services: dict[str, ServiceOutcome] = {
            service: ServiceOutcome(service, request_id) for service, request_id in requests.items()
        }
        self._by_request = {outcome.request_id: outcome for outcome in self.services.values()}
        self.ignored: Counter[Ignored] = Counter()
        self.sent: set[str] = set()
        """Services whose request the broker accepted; a fail-fast abort can leave some unasked."""
        self.transport_reason: AbortReason | None = None
        self._settled_at: datetime | None = None

    @property
    def status(self) -> GatherStatus:
        if self.reasons:
            return GatherStatus.ABORTED
        if all(outcome.state is ServiceState.OK for outcome in self.services.values()):
            return GatherStatus.COMPLETE
        return GatherStatus.GATHERING

    @property
    def done(self) -> bool:
        return self.status is not GatherStatus.GATHERING

    @property
    def reasons(self) -> tuple[AbortReason, ...]:
        service_reasons = tuple(o.reason for o in self.services.values() if o.reason is not None)
        if self.transport_reason is not None:
            return (*service_reasons, self.transport_reason)
        return service_reasons

    @property
    def answered(self) -> int:
        """Services that have settled, for progress displays."""
        return sum(1 for outcome in self.services.values() if outcome.state is not ServiceState.WAITING)

    @property
    def expected(self) -> int:
        return len(self.services)

    def request_sent(self, service: str) -> None:
        """The shell published this service's request (for the audit: asked, or never asked)."""
        self.sent.add(service)

    def records(self) -> dict[str, tuple[UsageRecord, ...]]:
        """The complete inventory of every service (meaningful once the status is COMPLETE)."""
        return {service: outcome.records for service, outcome in self.services.items()}

    def handle(self, event: GatherEvent) -> None:
        if event.at >= self.deadline and not isinstance(event, DeadlinePassed):
            self._expire(event.at)
        match event:
            case ReplyReceived():
                self._on_reply(event)
            case RequestReturned():
                self._on_returned(event)
            case DeadlinePassed():
                self._expire(event.at)
            case TransportLost():
                self._on_transport_lost(event)

    def _settle(self, at: datetime) -> None:
        if self._settled_at is None and self.done:
            self._settled_at = at

    def _fail(self, outcome: ServiceOutcome, code: AbortCode, message: str, at: datetime) -> None:
        outcome.state = ServiceState.FAILED
        outcome.reason = AbortReason(code=code, message=message, service=outcome.service)
        self._settle(at)

    def _expire(self, at: datetime) -> None:
        for outcome in self.services.values():
            if outcome.state is ServiceState.WAITING:
                self._fail(
                    outcome,
                    AbortCode.DEADLINE,
                    f"no complete reply before the deadline {self.deadline.isoformat()}"
                    f"{_missing_chunks(outcome)}",
                    at,
                )

    def _on_transport_lost(self, event: TransportLost) -> None:
        if self._settled_at is None:
            self.transport_reason = AbortReason(
                code=AbortCode.TRANSPORT_LOST,
                message=f"reply channel lost while gathering: {event.reason}",
            )
            self._settle(event.at)

    def _on_returned(self, event: RequestReturned) -> None:
        outcome = self._by_request.get(event.correlation_id)
        if outcome is None or outcome.state is not ServiceState.WAITING:
            return
        self._fail(
            outcome,
            AbortCode.UNROUTABLE,
            f"request returned by the broker ({event.reply_text}): no queue is bound for "
            f"service {outcome.service!r}; is the service deployed?",
            event.at,
        )

    def _on_reply(self, event: ReplyReceived) -> None:
        outcome = self._by_request.get(event.correlation_id or "")
        if outcome is None:
            self.ignored[Ignored.UNKNOWN_CORRELATION] += 1
            return
        if outcome.state is not ServiceState.WAITING or self._settled_at is not None:
            self.ignored[_why_ignored(outcome)] += 1
            return
        try:
            reply = UsageReply.from_json(event.body)
        except ValidationError as error:
            outcome.raw_replies.append(event.body)
            self._fail(outcome, AbortCode.INVALID_REPLY, _describe(error), event.at)
            return
        if reply.chunk.seq in outcome.chunks:
            self.ignored[Ignored.DUPLICATE] += 1
            return
        outcome.raw_replies.append(event.body)
        self._accept(outcome, reply, event.at)

    def _accept(self, outcome: ServiceOutcome, reply: UsageReply, at: datetime) -> None:
        if reply.service != outcome.service or reply.request_id != outcome.request_id:
            self._fail(
                outcome,
                AbortCode.INVALID_REPLY,
                f"reply names service {reply.service!r} request {reply.request_id!r}, "
                f"expected {outcome.service!r} request {outcome.request_id!r}",
                at,
            )
            return
        if reply.status == "error" and reply.error is not None:
            retry = " (retryable)" if reply.error.retryable else ""
            self._fail(
                outcome, AbortCode.SERVICE_ERROR, f"{reply.error.code}: {reply.error.message}{retry}", at
            )
            return
        outcome.chunks[reply.chunk.seq] = reply
        self._complete_if_whole(outcome, at)

    def _complete_if_whole(self, outcome: ServiceOutcome, at: datetime) -> None:
        last = next((reply for reply in outcome.chunks.values() if reply.chunk.last), None)
        if last is None:
            return
        beyond = [seq for seq in outcome.chunks if seq > last.chunk.seq]
        if beyond:
            self._fail(
                outcome,
                AbortCode.INCOMPLETE,
                f"chunk {max(beyond)} arrived after the last chunk {last.chunk.seq}",
                at,
            )
            return
        if len(outcome.chunks) < last.chunk.seq + 1:
            return  # earlier chunks may still be on their way
        received = sum(len(reply.records) for reply in outcome.chunks.values())
        if received != last.chunk.total_records:
            self._fail(
                outcome,
                AbortCode.INCOMPLETE,
                f"{received} records received, the last chunk announced {last.chunk.total_records}",
                at,
            )
            return
        outcome.state = ServiceState.OK
        self._settle(at)


def _why_ignored(outcome: ServiceOutcome) -> Ignored:
    """A repeat of an answer already taken is a duplicate; anything else after settling is late."""
    answered = outcome.state is ServiceState.OK or (
        outcome.reason is not None and outcome.reason.code is not AbortCode.DEADLINE
    )
    return Ignored.DUPLICATE if answered else Ignored.LATE


def _missing_chunks(outcome: ServiceOutcome) -> str:
    if not outcome.chunks:
        return ""
    last = next((reply.chunk.seq for reply in outcome.chunks.values() if reply.chunk.last), None)
    if last is None:
        return f" ({len(outcome.chunks)} chunk(s) received, the last one not)"
    missing = sorted(set(range(last + 1)) - set(outcome.chunks))
    return f" ({len(outcome.chunks)} chunk(s) received, missing seq {', '.join(map(str, missing))})"


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False)
    ]
    shown = "; ".join(problems[:5])
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"invalid reply: {shown}{more}"


def request_ids(services: Iterable[str], report_id: str, attempt: str) -> dict[str, str]:
    """Correlation ids naming report, service and attempt, readable in broker tools and logs.

    ``attempt`` differs per gather, so a straggling reply to an earlier attempt of the same report
    can never be mistaken for an answer to this one.
    """
    return {service: f"{report_id}/{service}/{attempt}" for service in services}
