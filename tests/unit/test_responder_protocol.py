"""The responder's decisions without a broker: serve, skip or refuse a request; cut the replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contracts import ErrorCode, Period, UsageRecord, UsageReply, UsageRequest, report_id
from workers.sdk.protocol import (
    Chunker,
    Expired,
    Refuse,
    Work,
    deadline_reply,
    decide,
    error_reply,
    internal_reply,
    ok_replies,
)

DEADLINE = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
BEFORE = DEADLINE - timedelta(seconds=10)
REQUEST = UsageRequest(
    request_id="rep/compute/a1",
    report_id=report_id("2026-10", 1),
    period=Period.month("2026-10"),
    service="compute",
    deadline=DEADLINE,
)
BODY = REQUEST.to_json()


def records(count: int) -> list[UsageRecord]:
    return [
        UsageRecord(
            account_id="acme",
            resource_id=f"vm-{n}",
            resource_type="vm",
            metric="vcpu",
            quantity=Decimal(n),
            unit="vCPU-second",
        )
        for n in range(count)
    ]


def refused(decision: object) -> Refuse:
    assert isinstance(decision, Refuse), decision
    return decision


def refusal_reply(decision: object) -> UsageReply:
    reply = refused(decision).reply
    assert reply is not None
    return reply


def test_a_valid_request_in_time_is_work() -> None:
    assert decide(BODY, REQUEST.request_id, "compute", BEFORE) == Work(REQUEST)


def test_a_request_without_correlation_id_is_still_work() -> None:
    assert decide(BODY, None, "compute", BEFORE) == Work(REQUEST)


@pytest.mark.parametrize("now", [DEADLINE, DEADLINE + timedelta(minutes=1)], ids=["at", "after"])
def test_a_request_at_or_past_its_deadline_has_expired(now: datetime) -> None:
    assert decide(BODY, REQUEST.request_id, "compute", now) == Expired(REQUEST)


def test_invalid_json_is_refused_with_an_invalid_request_reply() -> None:
    reply = refusal_reply(decide(b"{not json", "corr-1", "compute", BEFORE))

    assert (reply.request_id, reply.service, reply.status) == ("corr-1", "compute", "error")
    assert reply.error is not None
    assert reply.error.code == ErrorCode.INVALID_REQUEST
    assert reply.error.message.startswith("invalid usage request: 1 problem(s): body: Invalid JSON")
    assert not reply.error.retryable


def test_a_schema_error_is_refused_naming_the_field() -> None:
    body = BODY.replace(b'"service":"compute"', b'"service":"Compute!"')
    decision = refused(decide(body, "corr-1", "compute", BEFORE))

    assert decision.reply is not None
    assert decision.reply.request_id == "corr-1"
    assert "service: String should match pattern" in decision.why


def test_a_request_for_another_service_is_refused() -> None:
    decision = refused(decide(BODY, REQUEST.request_id, "storage", BEFORE))

    assert decision.why == "request rep/compute/a1 is for service 'compute', this is 'storage'"
    assert decision.reply is not None
    assert decision.reply.request_id == REQUEST.request_id
    assert decision.reply.error is not None
    assert decision.reply.error.code == ErrorCode.INVALID_REQUEST


def test_a_correlation_id_differing_from_the_request_id_is_refused() -> None:
    reply = refusal_reply(decide(BODY, "other-corr", "compute", BEFORE))

    assert reply.request_id == "other-corr"
    assert reply.error is not None
    assert reply.error.code == ErrorCode.INVALID_REQUEST
    assert reply.error.message == "correlation_id 'other-corr' differs from request_id 'rep/compute/a1'"


def test_an_invalid_request_without_correlation_id_is_refused_without_a_reply() -> None:
    decision = refused(decide(b"{not json", None, "compute", BEFORE))

    assert decision.reply is None
    assert decision.why.startswith("invalid usage request")


def test_an_invalid_request_with_an_overlong_correlation_id_is_still_refused() -> None:
    assert isinstance(decide(b"{not json", "x" * 200, "compute", BEFORE), Refuse)


def chunks_of(count: int, chunk_size: int) -> list[UsageReply]:
    chunker = Chunker(REQUEST, chunk_size)
    replies = [reply for record in records(count) if (reply := chunker.add(record)) is not None]
    return [*replies, chunker.finish()]


def shape(replies: list[UsageReply]) -> list[tuple[int, bool, int, int]]:
    """(seq, last, total_records, records in the chunk) of each reply."""
    return [(r.chunk.seq, r.chunk.last, r.chunk.total_records, len(r.records)) for r in replies]


def test_no_records_give_one_empty_last_chunk() -> None:
    [reply] = ok_replies(REQUEST, [], chunk_size=100)

    assert (reply.request_id, reply.service, reply.status) == (REQUEST.request_id, "compute", "ok")
    assert reply.records == ()
    assert (reply.chunk.seq, reply.chunk.last, reply.chunk.total_records) == (0, True, 0)
    assert shape(chunks_of(0, 3)) == [(0, True, 0, 0)]


def test_five_records_in_chunks_of_two_give_three_chunks_with_running_totals() -> None:
    inventory = records(5)
    replies = ok_replies(REQUEST, inventory, chunk_size=2)

    assert shape(replies) == [(0, False, 2, 2), (1, False, 4, 2), (2, True, 5, 1)]
    assert [record for reply in replies for record in reply.records] == inventory


def test_records_that_fill_the_last_chunk_exactly_give_no_empty_chunk() -> None:
    assert shape(ok_replies(REQUEST, records(4), chunk_size=2)) == [(0, False, 2, 2), (1, True, 4, 2)]


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, [(0, True, 1, 1)]),
        (3, [(0, True, 3, 3)]),  # exactly chunk_size: one full last chunk
        (4, [(0, False, 3, 3), (1, True, 4, 1)]),  # chunk_size + 1
        (6, [(0, False, 3, 3), (1, True, 6, 3)]),
        (7, [(0, False, 3, 3), (1, False, 6, 3), (2, True, 7, 1)]),
    ],
)
def test_chunk_boundaries(count: int, expected: list[tuple[int, bool, int, int]]) -> None:
    assert shape(chunks_of(count, 3)) == expected


def test_a_full_chunk_goes_out_only_when_a_further_record_arrives() -> None:
    chunker = Chunker(REQUEST, 2)
    inventory = records(3)

    assert chunker.add(inventory[0]) is None
    assert chunker.add(inventory[1]) is None  # full, but it might be the last chunk
    first = chunker.add(inventory[2])  # now it cannot be: out it goes, not last
    assert first is not None
    assert (first.chunk.seq, first.chunk.last, first.chunk.total_records) == (0, False, 2)
    assert first.records == tuple(inventory[:2])
    assert chunker.records_sent == 2
    last = chunker.finish()
    assert (last.chunk.seq, last.chunk.last, last.chunk.total_records, last.records) == (
        1,
        True,
        3,
        (inventory[2],),
    )
    assert chunker.records_sent == 3


def test_chunk_size_one_sends_one_record_per_chunk() -> None:
    replies = chunks_of(3, 1)

    assert shape(replies) == [(0, False, 1, 1), (1, False, 2, 1), (2, True, 3, 1)]
    assert all(UsageReply.from_json(reply.to_json()) == reply for reply in replies)


def test_nothing_follows_the_last_chunk() -> None:
    chunker = Chunker(REQUEST, 2)
    chunker.finish()

    with pytest.raises(RuntimeError, match="finished"):
        chunker.add(records(1)[0])
    with pytest.raises(RuntimeError, match="finished"):
        chunker.finish()


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        ok_replies(REQUEST, records(1), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        Chunker(REQUEST, 0)


def test_deadline_and_internal_error_replies() -> None:
    deadline = deadline_reply(REQUEST)
    internal = internal_reply(REQUEST, KeyError("acct-9"))

    assert deadline.error is not None and internal.error is not None
    assert (deadline.status, deadline.error.code, deadline.error.retryable) == ("error", "deadline", True)
    assert deadline.error.message == "usage for period 2026-10 was not ready by the deadline"
    assert (internal.error.code, internal.error.retryable) == (ErrorCode.INTERNAL, False)
    assert internal.error.message == "KeyError: 'acct-9'"
    assert internal.request_id == deadline.request_id == REQUEST.request_id


def test_error_reply_truncates_a_long_message_to_2000_chars() -> None:
    reply = error_reply("rep/compute/a1", "compute", ErrorCode.INTERNAL, "x" * 5000, retryable=True)

    assert reply.error is not None
    assert reply.error.message == "x" * 2000
    assert (reply.error.code, reply.error.retryable) == ("internal", True)
    assert UsageReply.from_json(reply.to_json()) == reply


@pytest.mark.parametrize("sender", ["reckon-storage", None])
def test_a_request_not_sent_by_the_coordinators_user_is_refused_without_any_reply(sender: str | None) -> None:
    decision = refused(
        decide(BODY, REQUEST.request_id, "compute", BEFORE, sender=sender, coordinator="reckon")
    )

    assert decision.reply is None  # nothing goes to a reply_to a stranger chose
    assert "not the coordinator 'reckon'" in decision.why


def test_a_request_signed_by_the_coordinator_is_work() -> None:
    decision = decide(BODY, REQUEST.request_id, "compute", BEFORE, sender="reckon", coordinator="reckon")

    assert isinstance(decision, Work)


def test_every_chunk_of_one_computation_carries_its_answer_id() -> None:
    chunker = Chunker(REQUEST, 2, answer_id="answer-1")
    chunks = [reply for record in records(5) if (reply := chunker.add(record)) is not None]
    chunks.append(chunker.finish())

    assert {chunk.chunk.answer_id for chunk in chunks} == {"answer-1"}
    assert chunks[0].schema_version == "1.2"
