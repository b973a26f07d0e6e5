"""The sans-I/O gather state machine: every outcome of one report's gather, driven by timed events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from accounting.amqp.gatherer import request_ids
from accounting.core.gather import Gather, GatherStatus, Ignored
from accounting.core.gather_answers import ServiceState
from accounting.core.gather_events import (
    Action,
    ChunkRefused,
    DeadlinePassed,
    DropAnswer,
    KeepBody,
    NoConsumer,
    ReplyReceived,
    RequestReturned,
    StoreChunk,
    TransportLost,
)
from accounting.core.gather_limits import DEFAULT_LIMITS, ReplyLimits
from contracts import AbortCode, AbortReason, Chunk, ServiceError, UsageRecord, UsageReply

START = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
DEADLINE = START + timedelta(seconds=30)
REQUESTS = {"compute": "rep/compute/a1", "storage": "rep/storage/a1"}


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def record(resource: str = "vm-1", quantity: str = "3600", account: str = "acme") -> UsageRecord:
    return UsageRecord(
        account_id=account,
        resource_id=resource,
        resource_type="vm",
        metric="vcpu",
        quantity=Decimal(quantity),
        unit="vCPU-second",
    )


def body(
    service: str,
    records: Sequence[UsageRecord] = (),
    *,
    seq: int = 0,
    last: bool = True,
    total: int | None = None,
    request_id: str | None = None,
) -> bytes:
    return UsageReply(
        request_id=REQUESTS[service] if request_id is None else request_id,
        service=service,
        status="ok",
        records=tuple(records),
        chunk=Chunk(seq=seq, last=last, total_records=len(records) if total is None else total),
    ).to_json()


def reply(service: str, payload: bytes, seconds: float = 1) -> ReplyReceived:
    return ReplyReceived(correlation_id=REQUESTS[service], body=payload, at=at(seconds))


def new_gather(*services: str) -> Gather:
    return Gather({service: REQUESTS[service] for service in services or REQUESTS}, DEADLINE)


def only_reason(gather: Gather) -> AbortReason:
    [reason] = gather.reasons
    return reason


def stored(actions: Sequence[Action]) -> dict[str, tuple[UsageRecord, ...]]:
    """The records the machine handed over to be stored, per service, in chunk order."""
    chunks = sorted(
        (action for action in actions if isinstance(action, StoreChunk)),
        key=lambda action: (action.service, action.reply.chunk.seq),
    )
    found: dict[str, tuple[UsageRecord, ...]] = {}
    for chunk in chunks:
        found[chunk.service] = found.get(chunk.service, ()) + chunk.reply.records
    return found


def test_every_service_ok_completes_handing_over_the_records_of_each_to_store() -> None:
    gather = new_gather()
    actions = [
        *gather.handle(reply("compute", body("compute", [record("vm-1"), record("vm-2")]))),
        *gather.handle(reply("storage", body("storage", [record("vol-1")]))),
    ]

    assert gather.status is GatherStatus.COMPLETE
    assert gather.decided and gather.finished
    assert gather.reasons == ()
    assert stored(actions) == {
        "compute": (record("vm-1"), record("vm-2")),
        "storage": (record("vol-1"),),
    }
    assert (gather.services["compute"].records, gather.records) == (2, 3)


def test_status_stays_gathering_while_a_service_has_not_answered() -> None:
    gather = new_gather()
    gather.handle(reply("compute", body("compute", [record()])))

    assert gather.status is GatherStatus.GATHERING
    assert not gather.done


def test_answered_and_expected_count_progress() -> None:
    gather = new_gather()
    assert (gather.answered, gather.expected) == (0, 2)

    gather.handle(reply("compute", body("compute")))

    assert (gather.answered, gather.expected) == (1, 2)


def test_returned_request_aborts_at_once_as_unroutable_naming_the_service() -> None:
    gather = new_gather()
    gather.handle(RequestReturned(REQUESTS["storage"], "NO_ROUTE", at(0.1)))

    assert gather.status is GatherStatus.ABORTED
    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.UNROUTABLE, "storage")
    assert "NO_ROUTE" in reason.message
    assert "'storage'" in reason.message
    assert gather.services["storage"].state is ServiceState.FAILED


def test_a_queue_nothing_consumes_aborts_at_once_as_unroutable_naming_the_service() -> None:
    gather = new_gather()
    gather.handle(NoConsumer(REQUESTS["storage"], "usage.requests.storage", at(0.1)))

    assert gather.status is GatherStatus.ABORTED
    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.UNROUTABLE, "storage")
    assert "no consumer on queue usage.requests.storage" in reason.message


@pytest.mark.parametrize(
    ("content_type", "content_encoding"),
    [("text/plain", None), (None, None), ("application/json", "gzip"), ("application/xml", None)],
)
def test_a_reply_that_is_not_uncompressed_json_is_an_invalid_reply(
    content_type: str | None, content_encoding: str | None
) -> None:
    gather = new_gather("compute")
    event = ReplyReceived(REQUESTS["compute"], body("compute"), at(1), None, content_type, content_encoding)
    gather.handle(event)

    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.INVALID_REPLY, "compute")
    assert "content_type" in reason.message


def test_a_second_returned_request_is_recorded_after_the_abort() -> None:
    gather = new_gather()
    gather.handle(RequestReturned(REQUESTS["storage"], "NO_ROUTE", at(0.1)))
    gather.handle(RequestReturned(REQUESTS["compute"], "NO_ROUTE", at(0.2)))

    assert [(r.code, r.service) for r in gather.reasons] == [
        (AbortCode.UNROUTABLE, "compute"),
        (AbortCode.UNROUTABLE, "storage"),
    ]


def test_error_reply_fails_the_service_with_its_code_and_message() -> None:
    error = UsageReply(
        request_id=REQUESTS["storage"],
        service="storage",
        status="error",
        error=ServiceError(code="unavailable", message="database is down", retryable=True),
    ).to_json()
    gather = new_gather()
    gather.handle(reply("storage", error))

    assert gather.status is GatherStatus.ABORTED
    assert only_reason(gather) == AbortReason(
        code=AbortCode.SERVICE_ERROR,
        service="storage",
        message="unavailable: database is down (retryable)",
    )


def test_reply_that_is_not_json_is_an_invalid_reply() -> None:
    gather = new_gather()
    actions = gather.handle(reply("compute", b"this is not json"))

    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.INVALID_REPLY, "compute")
    assert reason.message.startswith("invalid reply: body: Invalid JSON")
    assert actions == (KeepBody("compute", REQUESTS["compute"], b"this is not json"),)


@pytest.mark.parametrize(
    ("quantity", "complaint"),
    [('"-1"', "negative"), ("1.5", "not a float")],
    ids=["negative", "float"],
)
def test_bad_quantity_is_an_invalid_reply_naming_the_field_path(quantity: str, complaint: str) -> None:
    payload = body("compute", [record(quantity="7")]).replace(
        b'"quantity":"7"', f'"quantity":{quantity}'.encode()
    )
    gather = new_gather()
    gather.handle(reply("compute", payload))

    reason = only_reason(gather)
    assert reason.code is AbortCode.INVALID_REPLY
    assert "records.0.quantity" in reason.message
    assert complaint in reason.message


def test_unknown_major_schema_version_is_an_invalid_reply() -> None:
    payload = body("compute").replace(
        f'"schema_version":"{UsageReply.VERSION}"'.encode(), b'"schema_version":"2.0"'
    )
    gather = new_gather()
    gather.handle(reply("compute", payload))

    reason = only_reason(gather)
    assert reason.code is AbortCode.INVALID_REPLY
    assert "schema_version 2.0 is not supported" in reason.message


def test_reply_naming_another_service_is_an_invalid_reply() -> None:
    payload = UsageReply(request_id=REQUESTS["compute"], service="storage", status="ok").to_json()
    gather = new_gather()
    gather.handle(reply("compute", payload))

    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.INVALID_REPLY, "compute")
    assert "reply names service 'storage'" in reason.message


def test_reply_naming_another_request_is_an_invalid_reply() -> None:
    gather = new_gather()
    gather.handle(reply("compute", body("compute", request_id="rep/compute/a0")))

    reason = only_reason(gather)
    assert reason.code is AbortCode.INVALID_REPLY
    assert "request 'rep/compute/a0'" in reason.message


def test_deadline_fails_only_the_missing_service() -> None:
    gather = new_gather()
    gather.handle(reply("compute", body("compute")))
    gather.handle(DeadlinePassed(DEADLINE))

    assert gather.status is GatherStatus.ABORTED
    assert only_reason(gather) == AbortReason(
        code=AbortCode.DEADLINE,
        service="storage",
        message=f"no complete reply before the deadline {DEADLINE.isoformat()}",
    )


def test_deadline_names_every_missing_service() -> None:
    gather = new_gather()
    gather.handle(DeadlinePassed(DEADLINE))

    assert [(r.code, r.service) for r in gather.reasons] == [
        (AbortCode.DEADLINE, "compute"),
        (AbortCode.DEADLINE, "storage"),
    ]


def test_reply_stamped_at_the_deadline_is_late_and_its_service_misses_the_deadline() -> None:
    gather = new_gather("compute")
    gather.handle(ReplyReceived(REQUESTS["compute"], body("compute"), DEADLINE))

    assert gather.ignored[Ignored.LATE] == 1
    assert gather.status is GatherStatus.ABORTED
    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.DEADLINE, "compute")


def test_after_an_abort_the_other_services_answers_are_still_taken_for_a_replay() -> None:
    gather = new_gather()
    gather.handle(RequestReturned(REQUESTS["storage"], "NO_ROUTE", at(0.1)))
    reasons_before = gather.reasons
    assert gather.decided and not gather.finished

    actions = gather.handle(reply("compute", body("compute", [record()]), seconds=2))

    assert stored(actions) == {"compute": (record(),)}
    assert gather.status is GatherStatus.ABORTED
    assert gather.reasons == reasons_before
    assert gather.services["compute"].state is ServiceState.OK
    assert gather.finished


def test_after_an_abort_a_reply_past_the_deadline_is_late_and_changes_nothing() -> None:
    gather = new_gather()
    gather.handle(RequestReturned(REQUESTS["storage"], "NO_ROUTE", at(0.1)))
    gather.handle(DeadlinePassed(DEADLINE))

    actions = gather.handle(reply("compute", body("compute"), seconds=31))

    assert actions == ()
    assert gather.ignored[Ignored.LATE] == 1
    assert gather.services["compute"].state is ServiceState.FAILED
    assert gather.finished


def test_second_reply_from_an_ok_service_is_an_ignored_duplicate() -> None:
    gather = new_gather()
    gather.handle(reply("compute", body("compute", [record()])))
    gather.handle(reply("compute", body("compute", [record("vm-9")]), seconds=2))

    assert gather.ignored[Ignored.DUPLICATE] == 1
    assert gather.services["compute"].records == 1
    assert gather.status is GatherStatus.GATHERING


@pytest.mark.parametrize("correlation_id", ["rep/ghost/a1", None])
def test_reply_with_an_unknown_correlation_id_is_ignored(correlation_id: str | None) -> None:
    gather = new_gather()
    gather.handle(ReplyReceived(correlation_id, body("compute"), at(1)))

    assert gather.ignored == {Ignored.UNKNOWN_CORRELATION: 1}
    assert gather.status is GatherStatus.GATHERING
    assert gather.answered == 0


def test_transport_lost_aborts_with_a_reason_naming_no_service() -> None:
    gather = new_gather()
    gather.handle(TransportLost("connection reset by peer", at(3)))

    assert gather.status is GatherStatus.ABORTED
    assert only_reason(gather) == AbortReason(
        code=AbortCode.TRANSPORT_LOST,
        service=None,
        message="reply channel lost while gathering: connection reset by peer",
    )


def test_transport_lost_after_completion_changes_nothing() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute")))
    gather.handle(TransportLost("closed", at(3)))

    assert gather.status is GatherStatus.COMPLETE


def test_chunks_out_of_order_complete_only_when_all_arrived_with_records_in_seq_order() -> None:
    a, b, c, d, e = (record(f"vm-{n}") for n in range(5))
    gather = new_gather("compute")

    actions = [
        *gather.handle(reply("compute", body("compute", [e], seq=2, last=True, total=5))),
        *gather.handle(reply("compute", body("compute", [a, b], seq=0, last=False, total=5))),
    ]
    assert not gather.done
    assert gather.services["compute"].state is ServiceState.WAITING

    actions += gather.handle(reply("compute", body("compute", [c, d], seq=1, last=False, total=5)))
    assert gather.status is GatherStatus.COMPLETE
    assert stored(actions) == {"compute": (a, b, c, d, e)}


def test_duplicate_chunk_is_ignored() -> None:
    first = body("compute", [record("vm-0")], seq=0, last=False, total=2)
    gather = new_gather("compute")
    actions = [
        *gather.handle(reply("compute", first)),
        *gather.handle(reply("compute", first, seconds=2)),
        *gather.handle(reply("compute", body("compute", [record("vm-1")], seq=1, last=True, total=2))),
    ]

    assert gather.ignored[Ignored.DUPLICATE] == 1
    assert gather.status is GatherStatus.COMPLETE
    assert stored(actions) == {"compute": (record("vm-0"), record("vm-1"))}


def test_an_error_reply_after_some_chunks_fails_the_service_rather_than_passing_for_a_repeat() -> None:
    error = UsageReply(
        request_id=REQUESTS["compute"],
        service="compute",
        status="error",
        error=ServiceError(code="internal", message="disk failed mid-stream"),
    ).to_json()
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=0, last=False)))

    gather.handle(reply("compute", error, seconds=2))

    reason = only_reason(gather)
    assert (reason.code, reason.message) == (AbortCode.SERVICE_ERROR, "internal: disk failed mid-stream")


def test_a_chunk_the_store_refused_fails_even_a_service_that_looked_complete() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")])))
    assert gather.status is GatherStatus.COMPLETE

    gather.handle(ChunkRefused("compute", "chunk 0 lists vm-0 twice", at(2)))

    reason = only_reason(gather)
    assert (reason.code, reason.service, reason.message) == (
        AbortCode.INVALID_REPLY,
        "compute",
        "chunk 0 lists vm-0 twice",
    )


def test_two_last_chunks_are_incomplete() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=1, last=True, total=2)))

    gather.handle(reply("compute", body("compute", [record("vm-1")], seq=2, last=True, total=2)))

    reason = only_reason(gather)
    assert (reason.code, reason.message) == (AbortCode.INCOMPLETE, "two last chunks: 1 and 2")


def test_the_machine_keeps_counters_not_records() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record(f"vm-{n}") for n in range(50)], last=False)))

    outcome = gather.services["compute"]
    assert (outcome.records, outcome.chunks, outcome.received) == (50, 1, {0})


def test_total_records_that_do_not_match_the_records_received_are_incomplete() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=0, last=False)))
    gather.handle(reply("compute", body("compute", [record("vm-1")], seq=1, last=True, total=3)))

    assert only_reason(gather) == AbortReason(
        code=AbortCode.INCOMPLETE,
        service="compute",
        message="2 records received, the last chunk announced 3",
    )


def test_chunk_beyond_the_last_is_incomplete() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=0, last=False, total=3)))
    gather.handle(reply("compute", body("compute", [record("vm-2")], seq=2, last=False, total=3)))
    gather.handle(reply("compute", body("compute", [record("vm-1")], seq=1, last=True, total=3)))

    assert only_reason(gather) == AbortReason(
        code=AbortCode.INCOMPLETE,
        service="compute",
        message="chunk 2 arrived after the last chunk 1",
    )


def test_deadline_with_some_chunks_received_says_how_many() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=0, last=False, total=3)))
    gather.handle(reply("compute", body("compute", [record("vm-1")], seq=1, last=False, total=3)))
    gather.handle(DeadlinePassed(DEADLINE))

    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.DEADLINE, "compute")
    assert "2 chunk(s) received" in reason.message


def test_deadline_message_does_not_claim_a_received_last_chunk_is_missing() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record("vm-0")], seq=0, last=False, total=3)))
    gather.handle(reply("compute", body("compute", [record("vm-2")], seq=2, last=True, total=3)))
    gather.handle(DeadlinePassed(DEADLINE))

    reason = only_reason(gather)
    assert "last one missing" not in reason.message
    assert reason.code is AbortCode.INCOMPLETE  # the answer came, with a hole in it
    assert "2 chunk(s) received, missing seq 1" in reason.message


def test_a_gather_without_services_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one configured service"):
        Gather({}, DEADLINE)


def test_a_repeat_after_completion_is_a_duplicate_not_late() -> None:
    gather = new_gather("compute")
    gather.handle(reply("compute", body("compute", [record()])))
    gather.handle(reply("compute", body("compute", [record()]), seconds=2))

    assert gather.status is GatherStatus.COMPLETE
    assert gather.ignored == {Ignored.DUPLICATE: 1}


def test_an_error_reply_after_the_abort_is_late_for_a_service_that_missed_the_deadline() -> None:
    gather = new_gather("compute")
    gather.handle(DeadlinePassed(DEADLINE))
    gather.handle(reply("compute", body("compute", [record()]), seconds=31))

    assert only_reason(gather).code is AbortCode.DEADLINE
    assert gather.ignored == {Ignored.LATE: 1}


# Sender identity, bounded inputs, answer ids ------------------------------------------------------


def guarded(limits: ReplyLimits = DEFAULT_LIMITS) -> Gather:
    return Gather(
        REQUESTS,
        DEADLINE,
        senders={"compute": "reckon-compute", "storage": "reckon-storage"},
        limits=limits,
    )


def signed(service: str, payload: bytes, user: str | None, seconds: float = 1) -> ReplyReceived:
    return ReplyReceived(REQUESTS[service], payload, at(seconds), user_id=user)


@pytest.mark.parametrize("user", ["reckon-storage", None, "guest"])
def test_a_reply_from_another_broker_user_can_neither_complete_nor_abort(user: str | None) -> None:
    gather = guarded()
    error = UsageReply(
        request_id=REQUESTS["compute"],
        service="compute",
        status="error",
        error=ServiceError(code="internal", message="forged"),
    ).to_json()

    assert gather.handle(signed("compute", body("compute", [record()]), user)) == ()
    assert gather.handle(signed("compute", error, user, seconds=2)) == ()

    assert gather.ignored == {Ignored.REJECTED_SENDER: 2}
    assert gather.status is GatherStatus.GATHERING
    assert gather.services["compute"].state is ServiceState.WAITING


def test_the_configured_user_answers_for_its_service() -> None:
    gather = guarded()
    gather.handle(signed("compute", body("compute", [record()]), "reckon-compute"))
    gather.handle(signed("storage", body("storage", [record("vol-1")]), "reckon-storage"))

    assert gather.status is GatherStatus.COMPLETE


def limited(**limits: int) -> Gather:
    return Gather({"compute": REQUESTS["compute"]}, DEADLINE, limits=ReplyLimits(**limits))


@pytest.mark.parametrize(
    ("limits", "payload", "complaint"),
    [
        (
            {"max_reply_bytes": 1024},
            body("compute", [record(f"vm-{n}") for n in range(20)]),
            "max_reply_bytes 1024",
        ),
        (
            {"max_records_per_chunk": 2},
            body("compute", [record(f"vm-{n}") for n in range(3)]),
            "max_records_per_chunk 2",
        ),
        (
            {"max_chunks_per_answer": 3},
            body("compute", [record()], seq=3, last=False),
            "max_chunks_per_answer 3",
        ),
        ({"max_records_per_answer": 5}, body("compute", [record()], total=6), "max_records_per_answer 5"),
    ],
    ids=["bytes", "records per chunk", "chunks", "records per answer"],
)
def test_a_reply_beyond_a_limit_is_an_invalid_reply_naming_the_limit(
    limits: dict[str, int], payload: bytes, complaint: str
) -> None:
    gather = limited(**limits)
    gather.handle(reply("compute", payload))

    reason = only_reason(gather)
    assert (reason.code, reason.service) == (AbortCode.INVALID_REPLY, "compute")
    assert complaint in reason.message


def test_attributes_beyond_their_limits_are_an_invalid_reply() -> None:
    many = record().model_copy(update={"attributes": {f"k{n}": "v" for n in range(4)}})
    long = record().model_copy(update={"attributes": {"note": "x" * 20}})

    for bad, complaint in ((many, "max_attributes 3"), (long, "max_attribute_length 10")):
        gather = limited(max_attributes=3, max_attribute_length=10)
        gather.handle(reply("compute", body("compute", [bad])))
        assert complaint in only_reason(gather).message


def answer(answer_id: str, seq: int, last: bool, records: Sequence[UsageRecord], total: int) -> bytes:
    return UsageReply(
        request_id=REQUESTS["compute"],
        service="compute",
        status="ok",
        records=tuple(records),
        chunk=Chunk(seq=seq, last=last, total_records=total, answer_id=answer_id),
    ).to_json()


def test_a_service_answering_again_replaces_its_partial_answer_and_the_two_are_never_mixed() -> None:
    gather = new_gather("compute")
    first = gather.handle(reply("compute", answer("a", 0, False, [record("vm-1")], 1)))
    again = gather.handle(reply("compute", answer("b", 0, False, [record("vm-1")], 1), seconds=2))
    stale = gather.handle(reply("compute", answer("a", 1, True, [record("vm-2")], 2), seconds=3))
    done = gather.handle(reply("compute", answer("b", 1, True, [record("vm-3")], 2), seconds=4))

    assert [type(action) for action in first] == [StoreChunk]
    assert [type(action) for action in again] == [DropAnswer, StoreChunk]
    assert stale == ()
    assert gather.ignored[Ignored.SUPERSEDED] == 1
    assert stored([*again, *done]) == {"compute": (record("vm-1"), record("vm-3"))}
    assert gather.status is GatherStatus.COMPLETE


def test_request_ids_are_random_per_request_so_no_service_can_guess_another_ones() -> None:
    first, second = request_ids(["compute", "storage"]), request_ids(["compute", "storage"])

    assert len({*first.values(), *second.values()}) == 4
    assert all(len(value) == 32 for value in first.values())
