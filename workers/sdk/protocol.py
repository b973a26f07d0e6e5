"""The responder's decisions, without a broker: what to do with a request, what to reply."""

from __future__ import annotations

from collections.abc import Sequence
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


def decide(body: bytes, correlation_id: str | None, service: str, now: datetime) -> Decision:
    """Validate a request body and check it is for ``service`` and not past its deadline."""
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


def ok_replies(request: UsageRequest, records: Sequence[UsageRecord], chunk_size: int) -> list[UsageReply]:
    """The complete inventory as one or more chunks; an empty inventory is one empty last chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    total = len(records)
    slices = [records[start : start + chunk_size] for start in range(0, total, chunk_size)] or [[]]
    return [
        UsageReply(
            request_id=request.request_id,
            service=request.service,
            status="ok",
            records=tuple(part),
            chunk=Chunk(seq=seq, last=seq == len(slices) - 1, total_records=total),
        )
        for seq, part in enumerate(slices)
    ]


def error_reply(
    request_id: str, service: str, code: ErrorCode | str, message: str, retryable: bool = False
) -> UsageReply:
    return UsageReply(
        request_id=request_id,
        service=service,
        status="error",
        error=ServiceError(code=str(code), message=message[:2000], retryable=retryable),
    )
