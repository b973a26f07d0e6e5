"""The conformance kit's pure checks, on hand-made replies: each rule passes a conforming answer and
fails the slip it exists for, naming it. No broker (the shell is tested in
tests/integration/test_conformance.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from conformance.amqp import last_closed_month
from conformance.checks import CHECKS, judge
from conformance.model import Asked, Observations, Reply, Result, Status
from conformance.replies import progress
from conformance.schema import reply_schema, reply_validator
from conformance.settings import ConformanceSettings
from contracts import CONTENT_TYPE, Period
from contracts.json_schema import message_schema
from contracts.limits import MAX_ATTRIBUTE_LENGTH, MAX_ATTRIBUTES, MAX_RECORDS_PER_CHUNK, MAX_REPLY_BYTES
from contracts.messages import UsageReply

PERIOD = Period.month("2026-10")
SENT = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DEADLINE = SENT + timedelta(seconds=30)
VALIDATOR = reply_validator()


def record(number: int, **changes: Any) -> dict[str, Any]:
    return {
        "account_id": f"acct-{number}",
        "resource_id": f"vm-{number}",
        "resource_type": "instance",
        "metric": "vcpu",
        "quantity": str(3600 * (number + 1)),
        "unit": "vCPU-second",
        "attributes": {"region": "eu-west-1"},
        **changes,
    }


def body(
    request_id: str,
    records: list[dict[str, Any]],
    seq: int,
    last: bool,
    total: int,
    answer_id: str | None = "answer-1",
    **changes: Any,
) -> dict[str, Any]:
    chunk = {"seq": seq, "last": last, "total_records": total, "answer_id": answer_id}
    return {
        "schema_version": "1.2",
        "request_id": request_id,
        "service": "echo",
        "status": "ok",
        "records": records,
        "chunk": chunk,
        **changes,
    }


def reply(
    document: dict[str, Any] | bytes,
    correlation_id: str | None,
    *,
    user: str | None = "guest",
    after: float = 0.5,
    content_type: str | None = CONTENT_TYPE,
) -> Reply:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return Reply(raw, correlation_id, user, content_type, None, SENT + timedelta(seconds=after))


def answer(
    request_id: str, records: list[dict[str, Any]], answer_id: str = "answer-1", size: int = 2
) -> tuple[Reply, ...]:
    """A conforming answer: chunks of ``size`` records, the last one announcing them all."""
    chunks = [records[start : start + size] for start in range(0, len(records), size)] or [[]]
    return tuple(
        reply(body(request_id, chunk, seq, seq == len(chunks) - 1, len(records), answer_id), request_id)
        for seq, chunk in enumerate(chunks)
    )


def asked(label: str, request_id: str, replies: tuple[Reply, ...] = (), **changes: Any) -> Asked:
    return Asked(label, request_id, SENT, DEADLINE, replies, **changes)


def refusal(request_id: str) -> dict[str, Any]:
    return {
        "schema_version": "1.2",
        "request_id": request_id,
        "service": "echo",
        "status": "error",
        "error": {"code": "invalid_request", "message": "not a usage request"},
    }


RECORDS = [record(number) for number in range(5)]


def conforming(**changes: Any) -> Observations:
    """What a run against a conforming service observes."""
    seen = Observations(
        service="echo",
        period=PERIOD,
        namespace="",
        expected_user="guest",
        first=asked("the first request", "r1", answer("r1", RECORDS)),
        again=asked("the second request", "r2", answer("r2", RECORDS)),
        redelivered=asked("the same request delivered again", "r2", answer("r2", RECORDS, "answer-2")),
        invalid_json=asked(
            "the malformed JSON request", "j", (reply(refusal("j"), "j"),), dead_lettered=True
        ),
        invalid_schema=asked("the schema-invalid request", "s", (reply(refusal("s"), "s"),)),
        unsigned=asked("the request without user_id", "u", waited=3.0),
    )
    return replace(seen, **changes)


def verdict(observations: Observations) -> Result:
    return judge(observations, VALIDATOR)


def failed(result: Result) -> set[str]:
    return {check.id for check in result.failed}


def test_a_conforming_service_passes_every_check_but_the_optional_impostor() -> None:
    result = verdict(conforming())

    assert result.passed, result.explain()
    assert [check.id for check in result.checks] == list(CHECKS)
    impostor = result.check("impostor")
    assert (impostor.status, impostor.optional) == (Status.NOT_CHECKED, True)
    assert result.check("answered").reason == "5 record(s) in 3 chunk(s) in 0.50s (deadline 30s)"


def test_the_validator_reads_the_committed_schema_which_is_the_models() -> None:
    document, source = reply_schema()

    assert source == "contracts/schemas/UsageReply.v1.json"
    assert document == message_schema(UsageReply)


@pytest.mark.parametrize(
    ("changed", "says"),
    [
        ({"unit": "bytes"}, "records.1.unit: unit 'bytes' is not in the unit vocabulary"),
        ({"quantity": 3600.5}, "records.1.quantity: 3600.5 is a JSON number (a float)"),
        (
            {"quantity": 3600},
            "records.1.quantity: 3600 is a JSON integer; the schema asks for a decimal string",
        ),
        ({"quantity": "-1"}, "records.1.quantity"),
        ({"quantity": "1E-19"}, "records.1.quantity"),
        ({"account_id": ""}, "records.1.account_id"),
        ({"attributes": {"region": 7}}, "records.1.attributes.region"),
    ],
    ids=["unit", "float", "integer", "negative", "too-many-decimals", "empty-account", "attribute-type"],
)
def test_a_reply_invalid_against_the_schema_fails_it_naming_the_field(
    changed: dict[str, Any], says: str
) -> None:
    records = [*RECORDS[:1], record(1, **changed), *RECORDS[2:]]
    first = asked("the first request", "r1", answer("r1", records))

    result = verdict(conforming(first=first))

    assert failed(result) - {"inventory"} == {"schema"}, result.explain()
    assert f"the first request chunk 0: {says}" in result.check("schema").reason


def test_what_the_schema_cannot_say_the_model_still_refuses() -> None:
    # The last chunk announces fewer records than it holds: a schema cannot compare the two.
    short = body("r1", RECORDS[:2], 0, True, 1)
    first = asked("the first request", "r1", (reply(short, "r1"),))

    result = verdict(conforming(first=first))

    assert "the coordinator's model" in result.check("schema").reason
    assert "total_records 1, the answer holds 2" in result.check("chunks").reason


def test_a_reply_that_is_not_json_or_not_json_content_fails_the_schema() -> None:
    first = asked(
        "the first request",
        "r1",
        (
            *answer("r1", RECORDS),
            reply(b"<html>", "r1"),
            reply(body("r1", [], 9, False, 0), "r1", content_type="text/plain"),
        ),
    )

    reason = verdict(conforming(first=first)).check("schema").reason

    assert "body is not JSON" in reason
    assert "content_type 'text/plain'" in reason


def test_replies_without_user_id_or_from_another_user_fail_user_id() -> None:
    unsigned = tuple(replace(one, user_id=None) for one in answer("r1", RECORDS))
    stranger = tuple(replace(one, user_id="mallory") for one in answer("r1", RECORDS))

    missing = verdict(conforming(first=asked("the first request", "r1", unsigned)))
    other = verdict(conforming(first=asked("the first request", "r1", stranger), expected_user_why="why"))

    assert failed(missing) == {"user_id"}
    assert "3 of 11 replies carry no user_id" in missing.check("user_id").reason
    assert failed(other) == {"user_id"}
    assert "replies from 'mallory' (3), expected 'guest' (why)" in other.check("user_id").reason


def test_a_reply_with_no_correlation_id_or_another_requests_id_fails_correlation() -> None:
    stray = reply(body("r1", [], 0, True, 0), None)
    misnamed = reply(body("r9", RECORDS, 0, True, 5), "r1")

    lost = verdict(conforming(strays=(stray,)))
    wrong = verdict(conforming(first=asked("the first request", "r1", (misnamed,))))

    assert failed(lost) == {"correlation"}
    assert "a reply without correlation_id" in lost.check("correlation").reason
    assert "request_id 'r9' in the body" in wrong.check("correlation").reason


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (((0, False), (2, True)), "missing seq 1 before the last chunk 2"),
        (((0, True), (1, True)), "2 last chunks (seq 0, 1)"),
        (((0, False), (1, False)), "no last chunk (2 chunk(s) received)"),
    ],
    ids=["gap", "two-last", "no-last"],
)
def test_chunks_must_run_from_0_without_a_gap_to_one_last_chunk(
    sent: tuple[tuple[int, bool], ...], says: str
) -> None:
    chunks = tuple(reply(body("r1", [record(seq)], seq, last, len(sent)), "r1") for seq, last in sent)

    result = verdict(conforming(first=asked("the first request", "r1", chunks)))

    assert "chunks" in failed(result), result.explain()
    assert says in result.check("chunks").reason


def test_a_wrong_total_a_chunk_after_the_last_and_a_chunk_changed_on_repeat_fail_chunks() -> None:
    chunks = (
        reply(body("r1", [record(0)], 0, False, 1), "r1"),
        reply(body("r1", [record(9)], 0, False, 1), "r1"),
        reply(body("r1", [record(1)], 1, True, 7), "r1"),
        reply(body("r1", [record(2)], 2, False, 3), "r1"),
    )

    reason = verdict(conforming(first=asked("the first request", "r1", chunks))).check("chunks").reason

    assert "chunk 0 sent twice with different contents" in reason
    assert "chunk(s) 2 after the last chunk 1" in reason
    assert "total_records 7, the answer holds 3" in reason


def test_an_answer_may_carry_no_chunk_at_all_one_last_chunk_with_every_record() -> None:
    whole = {key: value for key, value in body("r1", RECORDS, 0, True, 5).items() if key != "chunk"}
    first = asked("the first request", "r1", (reply(whole, "r1"),))

    result = verdict(conforming(first=first))

    assert {"answered", "chunks", "unique", "schema"} <= {
        c.id for c in result.checks if c.status is Status.PASS
    }


def test_a_resource_metric_twice_in_one_answer_fails_unique_even_across_chunks() -> None:
    records = [*RECORDS, record(0, quantity="1")]

    result = verdict(conforming(first=asked("the first request", "r1", answer("r1", records))))

    assert "unique" in failed(result)
    assert "(acct-0, vm-0, vcpu) 2 times (chunk(s) 0, 2)" in result.check("unique").reason


def test_the_inventory_must_be_the_same_twice_whatever_the_order_or_spelling_of_a_quantity() -> None:
    respelled = [record(number, quantity=f"{3600 * (number + 1)}.000") for number in reversed(range(5))]
    fewer = RECORDS[:4]

    same = verdict(conforming(again=asked("the second request", "r2", answer("r2", respelled))))
    changed = verdict(conforming(again=asked("the second request", "r2", answer("r2", fewer))))

    assert same.check("inventory").status is Status.PASS, same.explain()
    assert failed(changed) == {"inventory"}
    assert "1 only in the first answer" in changed.check("inventory").reason


def test_an_invalid_request_needs_an_error_reply_or_its_dead_letter() -> None:
    def invalid(replies: tuple[Reply, ...] = (), dead_lettered: bool | None = None) -> Result:
        sent = asked("the malformed JSON request", "j", replies, dead_lettered=dead_lettered, waited=2.0)
        return verdict(conforming(invalid_json=sent))

    assert invalid(dead_lettered=True).check("invalid_json").reason == "no reply; dead-lettered"
    assert invalid((reply(refusal("j"), "j"),), False).check("invalid_json").status is Status.PASS
    inventory = invalid((reply(body("j", RECORDS, 0, True, 5), "j"),))
    assert "answered with status ok" in inventory.check("invalid_json").reason
    silent = invalid(dead_lettered=False)
    assert "neither an error reply nor a dead letter within 2s" in silent.check("invalid_json").reason
    blind = invalid(dead_lettered=None)
    assert blind.check("invalid_json").status is Status.NOT_CHECKED
    assert not blind.passed  # what could not be judged does not pass


def test_an_unsigned_or_impostors_request_must_never_be_answered() -> None:
    answered_anyone = asked("the request without user_id", "u", answer("u", RECORDS))
    impostor = asked("the impostor's request", "i", answer("i", RECORDS))

    result = verdict(conforming(unsigned=answered_anyone, impostor=impostor))
    ignored = verdict(conforming(impostor=asked("the impostor's request", "i", waited=3.0)))
    refused = verdict(conforming(impostor_problem="broker user x could not publish"))

    assert failed(result) == {"no_user_id", "impostor"}
    assert "was answered (3 ok)" in result.check("impostor").reason
    assert ignored.check("impostor").status is Status.PASS and ignored.passed
    assert refused.check("impostor").status is Status.NOT_CHECKED and not refused.passed


@pytest.mark.parametrize(
    ("again_id", "redelivered_id", "says"),
    [
        ("answer-1", "answer-1", "the same answer_id 'answer-1'"),
        (None, None, "carry no chunk.answer_id"),
    ],
    ids=["same-answer-id", "no-answer-id"],
)
def test_a_request_delivered_again_needs_a_new_answer_id(
    again_id: str | None, redelivered_id: str | None, says: str
) -> None:
    def chunks(answer_id: str | None) -> tuple[Reply, ...]:
        return (reply(body("r2", RECORDS, 0, True, 5, answer_id), "r2"),)

    result = verdict(
        conforming(
            again=asked("the second request", "r2", chunks(again_id)),
            redelivered=asked("the same request delivered again", "r2", chunks(redelivered_id)),
        )
    )

    assert failed(result) == {"redelivery"}, result.explain()
    assert says in result.check("redelivery").reason


def test_a_request_delivered_again_and_not_answered_fails() -> None:
    result = verdict(conforming(redelivered=asked("the same request delivered again", "r2")))

    assert "was not answered within 30s" in result.check("redelivery").reason


def test_limits_records_per_chunk_attributes_and_reply_size() -> None:
    crowded = [record(number) for number in range(MAX_RECORDS_PER_CHUNK + 1)]
    labelled = record(0, attributes={f"label-{n}": "x" for n in range(MAX_ATTRIBUTES + 1)})
    long_value = record(1, attributes={"note": "x" * (MAX_ATTRIBUTE_LENGTH + 1)})
    huge = reply(b" " * (MAX_REPLY_BYTES + 1), "r1")

    big_chunk = verdict(
        conforming(first=asked("the first request", "r1", answer("r1", crowded, size=len(crowded))))
    )
    attributes = verdict(
        conforming(first=asked("the first request", "r1", answer("r1", [labelled, long_value])))
    )
    size = verdict(conforming(first=asked("the first request", "r1", (*answer("r1", RECORDS), huge))))

    assert "a chunk of 10001 records, above max_records_per_chunk 10000" in big_chunk.check("limits").reason
    reason = attributes.check("limits").reason
    assert "33 attributes, above max_attributes 32" in reason
    assert "attribute 'note' longer than max_attribute_length 256" in reason
    assert "above max_reply_bytes 8388608" in size.check("limits").reason


def test_no_answer_an_error_answer_and_a_late_answer_fail_answered() -> None:
    error = asked("the first request", "r1", (reply(refusal("r1"), "r1"),))
    too_late = DEADLINE + timedelta(seconds=2)
    late = asked("the first request", "r1", tuple(replace(one, at=too_late) for one in answer("r1", RECORDS)))

    silent = verdict(conforming(first=asked("the first request", "r1")))

    assert "no reply to the first request within its deadline (30s)" in silent.check("answered").reason
    assert (
        "answered with an error: invalid_request" in verdict(conforming(first=error)).check("answered").reason
    )
    assert (
        "the last chunk came 2.00s after the deadline"
        in verdict(conforming(first=late)).check("answered").reason
    )


def test_a_service_nothing_reaches_fails_answered_and_nothing_else_is_judged() -> None:
    result = verdict(
        conforming(unreachable="no consumer on queue usage.requests.echo within 30s: is echo running?")
    )

    assert failed(result) == {"answered"}
    assert {check.status for check in result.checks[1:]} == {Status.NOT_CHECKED}
    assert "does NOT conform" in result.explain()
    assert result.to_json()["passed"] is False


def test_progress_ends_with_the_answer_and_notices_a_last_chunk_with_a_gap() -> None:
    complete = answer("r1", RECORDS)
    gap = (complete[0], complete[2])

    assert progress(complete).ended
    assert not progress(complete[:2]).ended and not progress(complete[:2]).last_seen
    assert not progress(gap).ended and progress(gap).last_seen
    assert progress((reply(refusal("r1"), "r1"),)).ended


def test_settings_read_service_users_as_pairs() -> None:
    settings = ConformanceSettings(service_users="compute=reckon-compute, storage=reckon-storage")

    assert settings.service_users == {"compute": "reckon-compute", "storage": "reckon-storage"}
    with pytest.raises(ValidationError, match="not SERVICE=USER"):
        ConformanceSettings(service_users="compute")


def test_the_default_period_is_the_last_closed_month() -> None:
    assert last_closed_month(datetime(2026, 1, 15, tzinfo=UTC)).period_id == "2025-12"
    assert last_closed_month(datetime(2026, 11, 1, tzinfo=UTC)).period_id == "2026-10"


def test_past_the_first_records_of_a_reply_the_schemas_record_rules_still_hold() -> None:
    """Records beyond those validated against the whole schema are held to what the model does not
    check: the unit vocabulary and the quantity as a decimal string within the pattern."""
    records = [record(number) for number in range(300)]
    records[150] = record(150, unit="bytes")
    records[160] = record(160, quantity=12.5)
    records[170] = record(170, quantity="1E-19")
    first = asked("the first request", "r1", answer("r1", records, size=300))

    reason = verdict(conforming(first=first)).check("schema").reason

    assert "records.150.unit: unit 'bytes' is not in the unit vocabulary" in reason
    assert "records.160.quantity: 12.5 is a JSON number (a float)" in reason
    assert "records.170.quantity: '1E-19' is not a quantity the schema allows" in reason
