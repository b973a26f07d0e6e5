"""The gather state machine: expected services, a deadline and replies in; what to store and the
outcome out.

Sans-I/O: the aio-pika shell feeds it events (each carrying the time it happened), stores what
``handle`` returns, and reads its state; nothing here sleeps, publishes, stores or reads a clock.
It holds counters, never records: each accepted chunk is handed back to be written to the store,
and completeness is checked in constant time per chunk.

Two moments matter. The report is **decided** at the first failure (aborted) or when every service
gave a complete answer (complete). The gather is **finished** when every service has settled, at
the deadline, or when the transport is lost. Between the two — after an abort — the good answers
of the other services are still accepted and stored, so a replay of the failed services can reuse
them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from contracts import AbortCode, AbortReason, UsageReply


@dataclass(frozen=True)
class ReplyReceived:
    """A message arrived on the reply queue; ``user_id`` is the broker-verified sender, if set."""

    correlation_id: str | None
    body: bytes
    at: datetime
    user_id: str | None = None


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


GatherEvent = ReplyReceived | RequestReturned | DeadlinePassed | TransportLost | ChunkRefused


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


@dataclass(frozen=True)
class ReplyLimits:
    """What one reply and one answer may hold; beyond it the service's reply is ``invalid_reply``.

    The defaults are the coordinator's (``max_reply_bytes`` and the others in its settings).
    """

    max_reply_bytes: int = 8 * 2**20
    max_records_per_chunk: int = 10_000
    max_chunks_per_answer: int = 100_000
    max_records_per_answer: int = 10_000_000
    max_attributes: int = 32
    max_attribute_length: int = 256


DEFAULT_LIMITS = ReplyLimits()


class ServiceState(StrEnum):
    WAITING = "waiting"
    OK = "ok"
    FAILED = "failed"


class Ignored(StrEnum):
    """Why a reply was dropped without affecting the report."""

    LATE = "late"
    DUPLICATE = "duplicate"
    UNKNOWN_CORRELATION = "unknown_correlation"
    REJECTED_SENDER = "rejected_sender"
    """Not sent by the broker user configured for the service: it can neither complete nor abort."""
    SUPERSEDED = "superseded"
    """A chunk of an answer the service has since replaced with a new one."""


class GatherStatus(StrEnum):
    GATHERING = "gathering"
    COMPLETE = "complete"
    ABORTED = "aborted"


@dataclass
class ServiceOutcome:
    """What is known about one configured service's answer in this gather: counters only."""

    service: str
    request_id: str
    state: ServiceState = ServiceState.WAITING
    reason: AbortReason | None = None
    received: set[int] = field(default_factory=set)
    """Sequence numbers of the chunks accepted so far."""
    records: int = 0
    """Records in the chunks accepted so far."""
    highest_seq: int = -1
    last_seq: int | None = None
    announced: int | None = None
    """``total_records`` of the last chunk, once it arrived."""
    answer_id: str | None = None
    replaced: set[str | None] = field(default_factory=set)
    """Answer ids this service gave up for a newer answer: their late chunks are ignored."""

    def restart(self, answer_id: str | None) -> None:
        """The service answers again from scratch: forget the chunks of the answer before."""
        self.replaced.add(self.answer_id)
        self.answer_id = answer_id
        self.received = set()
        self.records, self.highest_seq = 0, -1
        self.last_seq = self.announced = None

    @property
    def chunks(self) -> int:
        return len(self.received)


class Gather:
    """One report's gather. Fail fast: the first failure decides the report as aborted.

    Failures that arrive for still-waiting services after the abort (more returned requests, say)
    are still recorded, so the aborted report names every reason known when it is written.
    """

    def __init__(
        self,
        requests: Mapping[str, str],
        deadline: datetime,
        *,
        senders: Mapping[str, str] | None = None,
        limits: ReplyLimits = DEFAULT_LIMITS,
    ) -> None:
        """``requests`` maps each configured service to the request id (correlation id) sent to it;
        ``senders`` maps each to the broker user allowed to answer for it (None: no check)."""
        if not requests:
            raise ValueError("a gather needs at least one configured service")
        self.deadline = deadline
        self.senders = dict(senders or {})
        self.limits = limits
        self.services: dict[str, ServiceOutcome] = {
            service: ServiceOutcome(service, request_id) for service, request_id in requests.items()
        }
        self._by_request = {outcome.request_id: outcome for outcome in self.services.values()}
        self.ignored: Counter[Ignored] = Counter()
        self.sent: set[str] = set()
        """Services whose request the broker accepted; a lost transport can leave some unasked."""
        self.transport_reason: AbortReason | None = None
        self._decided_at: datetime | None = None
        self._ended_at: datetime | None = None

    @property
    def status(self) -> GatherStatus:
        if self.reasons:
            return GatherStatus.ABORTED
        if all(outcome.state is ServiceState.OK for outcome in self.services.values()):
            return GatherStatus.COMPLETE
        return GatherStatus.GATHERING

    @property
    def decided(self) -> bool:
        """The report's fate is known: complete, or aborted."""
        return self.status is not GatherStatus.GATHERING

    done = decided

    @property
    def finished(self) -> bool:
        """Nothing more will be accepted: every service settled, the deadline passed, or the
        transport is gone."""
        return self._ended_at is not None or all(
            outcome.state is not ServiceState.WAITING for outcome in self.services.values()
        )

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

    @property
    def records(self) -> int:
        """Records accepted so far, over every service."""
        return sum(outcome.records for outcome in self.services.values())

    def request_sent(self, service: str) -> None:
        """The shell published this service's request (for the audit: asked, or never asked)."""
        self.sent.add(service)

    def handle(self, event: GatherEvent) -> tuple[Action, ...]:
        """Apply one event; return what the shell must store."""
        if event.at >= self.deadline and not isinstance(event, DeadlinePassed):
            self._expire(event.at)
        match event:
            case ReplyReceived():
                return self._on_reply(event)
            case RequestReturned():
                self._on_returned(event)
            case DeadlinePassed():
                self._expire(event.at)
            case TransportLost():
                self._on_transport_lost(event)
            case ChunkRefused():
                self._on_refused(event)
        return ()

    def _note(self, at: datetime) -> None:
        if self._decided_at is None and self.decided:
            self._decided_at = at

    def _fail(self, outcome: ServiceOutcome, code: AbortCode, message: str, at: datetime) -> None:
        outcome.state = ServiceState.FAILED
        outcome.reason = AbortReason(code=code, message=message, service=outcome.service)
        self._note(at)

    def _expire(self, at: datetime) -> None:
        for outcome in self.services.values():
            if outcome.state is ServiceState.WAITING:
                # An answer whose last chunk came but whose middle never did was sent and lost in
                # part: incomplete. Anything else is a service that did not finish in time.
                gap = outcome.last_seq is not None
                self._fail(
                    outcome,
                    AbortCode.INCOMPLETE if gap else AbortCode.DEADLINE,
                    f"no complete reply before the deadline {self.deadline.isoformat()}"
                    f"{_missing_chunks(outcome)}",
                    at,
                )
        if self._ended_at is None:
            self._ended_at = at

    def _on_transport_lost(self, event: TransportLost) -> None:
        if self._decided_at is None:
            self.transport_reason = AbortReason(
                code=AbortCode.TRANSPORT_LOST,
                message=f"reply channel lost while gathering: {event.reason}",
            )
            self._note(event.at)
        if self._ended_at is None:
            self._ended_at = event.at

    def _on_returned(self, event: RequestReturned) -> None:
        outcome = self._by_request.get(event.correlation_id)
        if outcome is None or outcome.state is not ServiceState.WAITING or self.finished:
            return
        self._fail(
            outcome,
            AbortCode.UNROUTABLE,
            f"request returned by the broker ({event.reply_text}): no queue is bound for "
            f"service {outcome.service!r}; is the service deployed?",
            event.at,
        )

    def _on_refused(self, event: ChunkRefused) -> None:
        outcome = self.services.get(event.service)
        if outcome is None or outcome.state is ServiceState.FAILED:
            return
        # The store checks what this machine cannot without holding records: even a service whose
        # answer looked complete fails when one of its chunks repeats records.
        self._fail(outcome, AbortCode.INVALID_REPLY, event.message, event.at)

    def _on_reply(self, event: ReplyReceived) -> tuple[Action, ...]:
        outcome = self._by_request.get(event.correlation_id or "")
        if outcome is None:
            self.ignored[Ignored.UNKNOWN_CORRELATION] += 1
            return ()
        expected = self.senders.get(outcome.service)
        if expected is not None and event.user_id != expected:
            self.ignored[Ignored.REJECTED_SENDER] += 1
            return ()
        if outcome.state is not ServiceState.WAITING or self._ended_at is not None:
            self.ignored[_why_ignored(outcome)] += 1
            return ()
        keep = (KeepBody(outcome.service, outcome.request_id, event.body[:4096]),)
        if len(event.body) > self.limits.max_reply_bytes:
            self._fail(
                outcome,
                AbortCode.INVALID_REPLY,
                f"reply of {len(event.body)} bytes exceeds max_reply_bytes {self.limits.max_reply_bytes}",
                event.at,
            )
            return keep
        try:
            reply = UsageReply.from_json(event.body)
        except ValidationError as error:
            self._fail(outcome, AbortCode.INVALID_REPLY, _describe(error), event.at)
            return keep
        except (ValueError, ArithmeticError) as error:  # defensive: validation must never escape
            self._fail(outcome, AbortCode.INVALID_REPLY, f"invalid reply: {type(error).__name__}", event.at)
            return keep
        if reply.service != outcome.service or reply.request_id != outcome.request_id:
            self._fail(
                outcome,
                AbortCode.INVALID_REPLY,
                f"reply names service {reply.service!r} request {reply.request_id!r}, "
                f"expected {outcome.service!r} request {outcome.request_id!r}",
                event.at,
            )
            return keep
        if reply.status == "error" and reply.error is not None:
            retry = " (retryable)" if reply.error.retryable else ""
            self._fail(
                outcome,
                AbortCode.SERVICE_ERROR,
                f"{reply.error.code}: {reply.error.message}{retry}",
                event.at,
            )
            return keep
        too_big = self._beyond_limits(outcome, reply)
        if too_big:
            self._fail(outcome, AbortCode.INVALID_REPLY, too_big, event.at)
            return keep
        restarted: tuple[Action, ...] = ()
        answer_id = reply.chunk.answer_id
        if answer_id != outcome.answer_id:
            if answer_id in outcome.replaced:
                self.ignored[Ignored.SUPERSEDED] += 1
                return ()
            if outcome.received:
                outcome.restart(answer_id)
                restarted = (DropAnswer(outcome.service),)
            else:
                outcome.answer_id = answer_id
        if reply.chunk.seq in outcome.received:
            self.ignored[Ignored.DUPLICATE] += 1
            return ()
        return restarted + self._accept(outcome, reply, event)

    def _beyond_limits(self, outcome: ServiceOutcome, reply: UsageReply) -> str | None:
        """Why this chunk exceeds a limit (naming the limit), or None."""
        limits, chunk, records = self.limits, reply.chunk, reply.records
        if len(records) > limits.max_records_per_chunk:
            limit = f"max_records_per_chunk {limits.max_records_per_chunk}"
            return f"chunk {chunk.seq} holds {len(records)} records, more than {limit}"
        if chunk.seq >= limits.max_chunks_per_answer:
            return f"chunk {chunk.seq} is beyond max_chunks_per_answer {limits.max_chunks_per_answer}"
        announced = chunk.total_records if chunk.last else 0
        if max(announced, outcome.records + len(records)) > limits.max_records_per_answer:
            return (
                f"the answer holds more than max_records_per_answer {limits.max_records_per_answer} records"
            )
        for number, record in enumerate(records):
            attributes = record.attributes
            if len(attributes) > limits.max_attributes:
                limit = f"max_attributes {limits.max_attributes}"
                return f"records.{number} has {len(attributes)} attributes, more than {limit}"
            for name, value in attributes.items():
                if len(name) > limits.max_attribute_length or len(value) > limits.max_attribute_length:
                    limit = f"max_attribute_length {limits.max_attribute_length}"
                    return f"records.{number}.attributes.{name[:40]} is longer than {limit}"
        return None

    def _accept(self, outcome: ServiceOutcome, reply: UsageReply, event: ReplyReceived) -> tuple[Action, ...]:
        chunk = reply.chunk
        last_seq = chunk.seq if chunk.last else outcome.last_seq
        if chunk.last and outcome.last_seq is not None:
            self._fail(
                outcome,
                AbortCode.INCOMPLETE,
                f"two last chunks: {outcome.last_seq} and {chunk.seq}",
                event.at,
            )
            return (KeepBody(outcome.service, outcome.request_id, event.body),)
        highest = max(outcome.highest_seq, chunk.seq)
        if last_seq is not None and highest > last_seq:
            self._fail(
                outcome,
                AbortCode.INCOMPLETE,
                f"chunk {highest} arrived after the last chunk {last_seq}",
                event.at,
            )
            return (KeepBody(outcome.service, outcome.request_id, event.body),)
        outcome.received.add(chunk.seq)
        outcome.records += len(reply.records)
        outcome.highest_seq = highest
        if chunk.last:
            outcome.last_seq, outcome.announced = chunk.seq, chunk.total_records
        stored = (StoreChunk(outcome.service, outcome.request_id, reply, event.body),)
        if outcome.last_seq is None or len(outcome.received) < outcome.last_seq + 1:
            return stored  # earlier chunks may still be on their way
        if outcome.records != outcome.announced:
            self._fail(
                outcome,
                AbortCode.INCOMPLETE,
                f"{outcome.records} records received, the last chunk announced {outcome.announced}",
                event.at,
            )
            return stored
        outcome.state = ServiceState.OK
        self._note(event.at)
        return stored


def _why_ignored(outcome: ServiceOutcome) -> Ignored:
    """A repeat of an answer already taken is a duplicate; anything else after settling is late."""
    answered = outcome.state is ServiceState.OK or (
        outcome.reason is not None and outcome.reason.code is not AbortCode.DEADLINE
    )
    return Ignored.DUPLICATE if answered else Ignored.LATE


def _missing_chunks(outcome: ServiceOutcome) -> str:
    if not outcome.received:
        return ""
    if outcome.last_seq is None:
        return f" ({outcome.chunks} chunk(s) received, the last one not)"
    missing = sorted(set(range(outcome.last_seq + 1)) - outcome.received)
    return f" ({outcome.chunks} chunk(s) received, missing seq {', '.join(map(str, missing))})"


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False)
    ]
    shown = "; ".join(problems[:5])
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"invalid reply: {shown}{more}"
