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

Its vocabulary lives beside it: the events in and actions out in ``gather_events``, one
service's answer in ``gather_answers``, and the limits a reply must respect in ``gather_limits``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from accounting.core.gather_answers import ServiceOutcome, ServiceState, missing_chunks
from accounting.core.gather_events import (
    Action,
    ChunkRefused,
    DeadlinePassed,
    DropAnswer,
    GatherEvent,
    KeepBody,
    NoConsumer,
    ReplyReceived,
    RequestReturned,
    StoreChunk,
    TransportLost,
)
from accounting.core.gather_limits import DEFAULT_LIMITS, ReplyLimits, beyond_limits
from contracts import CONTENT_TYPE, AbortCode, AbortReason, UsageReply


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
            case NoConsumer():
                self._on_no_consumer(event)
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
                    f"{missing_chunks(outcome)}",
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
        outcome = self._still_waiting(event.correlation_id)
        if outcome is not None:
            why = f"request returned by the broker ({event.reply_text}): no queue is bound for service"
            ask = "is the service deployed?"
            self._fail(outcome, AbortCode.UNROUTABLE, f"{why} {outcome.service!r}; {ask}", event.at)

    def _on_no_consumer(self, event: NoConsumer) -> None:
        outcome = self._still_waiting(event.correlation_id)
        if outcome is not None:
            why = f"no consumer on queue {event.queue}: service {outcome.service!r} is configured"
            self._fail(outcome, AbortCode.UNROUTABLE, f"{why} but not running; is it deployed?", event.at)

    def _still_waiting(self, correlation_id: str) -> ServiceOutcome | None:
        """The outcome a request's fate still decides: its service is waiting and the gather open."""
        outcome = self._by_request.get(correlation_id)
        if outcome is None or outcome.state is not ServiceState.WAITING or self.finished:
            return None
        return outcome

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
        if event.content_type != CONTENT_TYPE or event.content_encoding:
            encoding = f" with content_encoding {event.content_encoding!r}" if event.content_encoding else ""
            self._fail(
                outcome,
                AbortCode.INVALID_REPLY,
                f"reply has content_type {event.content_type!r}{encoding}: replies are uncompressed "
                f"{CONTENT_TYPE}",
                event.at,
            )
            return keep
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
        too_big = beyond_limits(self.limits, reply, outcome.records)
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


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False)
    ]
    shown = "; ".join(problems[:5])
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"invalid reply: {shown}{more}"
