"""The responder's decisions, without a broker: what to do with a request, what to reply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from contracts import Chunk, ErrorCode, ServiceError, UsageRecord, UsageReply, UsageRequest


@dataclass(frozen=True)
class Work:
    """A valid request for this service, still inside its deadline."""

    request: UsageRequest


@dataclass(frozen=True)
class Expired:
    """The deadline passed while the request waited in the queue: the coordinator gave up on it."""

    request: UsageRequest


@dataclass(frozen=True)
class Refuse:
    """The request cannot be served; reply with this error (when there is somewhere to reply)."""

    reply: UsageReply | None
    why: str


Decision = Work | Expired | Refuse


def decide(
    body: bytes,
    correlation_id: str | None,
    service: str,
    now: datetime,
    *,
    sender: str | None = None,
    coordinator: str | None = None,
) -> Decision:
    """Validate a request body and check it is for ``service`` and not past its deadline.

    With ``coordinator``, the request must have been sent by that broker user (``sender``, the
    AMQP ``user_id`` the broker verified): anyone else gets no answer at all, so a service's
    inventory never goes to a ``reply_to`` chosen by a stranger.
    """
    if coordinator is not None and sender != coordinator:
        return Refuse(None, f"request from broker user {sender!r}, not the coordinator {coordinator!r}")
    try:
        request = UsageRequest.from_json(body)
    except ValidationError as error:
        why = f"invalid usage request: {error.error_count()} problem(s): " + "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}"
            for item in error.errors(include_url=False)[:5]
        )
        return _refuse(correlation_id, service, why)
    if request.service != service:
        why = f"request {request.request_id} is for service {request.service!r}, this is {service!r}"
        return _refuse(request.request_id, service, why)
    if correlation_id is not None and correlation_id != request.request_id:
        why = f"correlation_id {correlation_id!r} differs from request_id {request.request_id!r}"
        return _refuse(correlation_id, service, why)
    if now >= request.deadline:
        return Expired(request)
    return Work(request)


def _refuse(reply_id: str | None, service: str, why: str) -> Refuse:
    """Refuse with an error reply when one can be addressed (the id must be a valid request id)."""
    if not reply_id:
        return Refuse(None, why)
    try:
        return Refuse(error_reply(reply_id, service, ErrorCode.INVALID_REQUEST, why), why)
    except ValidationError:
        return Refuse(None, f"{why} (no reply: correlation id {reply_id[:40]!r}… is not a valid request id)")


class Chunker:
    """Cuts a stream of records into ``UsageReply`` chunks of at most ``chunk_size`` records.

    Feed it records one by one with ``add``; it buffers at most ``chunk_size`` of them and keeps one
    record of look-ahead: a full buffer goes out as a NOT-last chunk only when a further record
    arrives, so the last chunk is never empty unless the whole inventory is (one empty last chunk).
    ``finish`` gives the last chunk (``last=True``).

    ``total_records`` of the last chunk counts every record of the answer. A not-last chunk cannot
    know that number yet, so it carries the count of records sent so far, itself included; the
    coordinator only trusts the last chunk's value.
    """

    def __init__(self, request: UsageRequest, chunk_size: int, answer_id: str | None = None) -> None:
        """``answer_id`` names this computation of the answer (the shell draws a new one each time
        it answers a request): if it answers the same request again, the two are never mixed."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self._answer_id = answer_id
        self._request = request
        self._chunk_size = chunk_size
        self._buffer: list[UsageRecord] = []
        self._seq = 0
        self._sent = 0
        self._finished = False

    @property
    def records_sent(self) -> int:
        """Records handed out in chunks so far (the buffered ones not included)."""
        return self._sent

    def add(self, record: UsageRecord) -> UsageReply | None:
        """Take one record; returns the previous full buffer as a not-last chunk when it is due."""
        if self._finished:
            raise RuntimeError("the answer is finished: no record can follow its last chunk")
        reply = self._cut(last=False) if len(self._buffer) == self._chunk_size else None
        self._buffer.append(record)
        return reply

    def finish(self) -> UsageReply:
        """The last chunk: the buffered records (none for an empty inventory), ``last=True``."""
        if self._finished:
            raise RuntimeError("the answer is already finished")
        self._finished = True
        return self._cut(last=True)

    def _cut(self, *, last: bool) -> UsageReply:
        records, self._buffer = tuple(self._buffer), []
        self._sent += len(records)
        reply = UsageReply(
            request_id=self._request.request_id,
            service=self._request.service,
            status="ok",
            records=records,
            chunk=Chunk(seq=self._seq, last=last, total_records=self._sent, answer_id=self._answer_id),
        )
        self._seq += 1
        return reply


def ok_replies(request: UsageRequest, records: Iterable[UsageRecord], chunk_size: int) -> list[UsageReply]:
    """The complete inventory as a list of chunks (see ``Chunker``); for tests and small answers."""
    chunker = Chunker(request, chunk_size)
    replies = [reply for record in records if (reply := chunker.add(record)) is not None]
    replies.append(chunker.finish())
    return replies


def deadline_reply(request: UsageRequest) -> UsageReply:
    """The answer was not complete by the request's deadline: a retryable ``deadline`` error."""
    text = f"usage for period {request.period.period_id} was not ready by the deadline"
    return error_reply(request.request_id, request.service, "deadline", text, retryable=True)


def internal_reply(request: UsageRequest, error: BaseException) -> UsageReply:
    """``usage(period)`` raised (before or after records were sent): an ``internal`` error."""
    text = f"{type(error).__name__}: {error}"
    return error_reply(request.request_id, request.service, ErrorCode.INTERNAL, text)


def error_reply(
    request_id: str, service: str, code: ErrorCode | str, message: str, retryable: bool = False
) -> UsageReply:
    return UsageReply(
        request_id=request_id,
        service=service,
        status="error",
        error=ServiceError(code=str(code), message=message[:2000], retryable=retryable),
    )
