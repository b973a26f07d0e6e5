"""The checks: what the kit observed (``Observations``) in, one verdict per rule of the contract out.

Sans-I/O: everything here reads the replies as received (bodies and properties) and the requests'
times; nothing publishes, waits or reads a clock, so each rule is unit-tested with hand-made
replies (``tests/unit/test_conformance_checks.py``). The shell that sends the requests and collects
the replies is ``conformance.amqp``.

Each check says ``pass``, ``fail`` or ``not checked`` (what it needs did not happen, such as a
complete answer to compare), with a reason in a sentence. ``CHECKS`` lists them in table order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from conformance.model import Asked, Check, Observations, Reply, Result, Status
from conformance.replies import Answer, canonical, newest, read, record_key, remembered
from conformance.validation import ReplyValidator
from contracts.limits import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_CHUNKS_PER_ANSWER,
    MAX_RECORDS_PER_ANSWER,
    MAX_RECORDS_PER_CHUNK,
    MAX_REPLY_BYTES,
)

CHECKS: dict[str, str] = {
    "answered": "An answer within the deadline",
    "schema": "Every reply valid against the schema",
    "user_id": "user_id on every reply: the service's broker user",
    "correlation": "correlation_id on every reply: the request's",
    "chunks": "Chunks contiguous from seq 0, one last, total_records right",
    "unique": "No (account, resource, metric) twice in an answer",
    "inventory": "Complete inventory: asked twice, the same records",
    "invalid_json": "Malformed JSON request: error reply or dead-lettered",
    "invalid_schema": "Schema-invalid request: error reply or dead-lettered",
    "no_user_id": "Request without user_id: never answered",
    "impostor": "Request from another broker user: never answered",
    "redelivery": "Request delivered again: answered with a new answer_id",
    "limits": "Limits: reply size, records per chunk and answer, attributes",
}
"""Every check, by id, with its title: the rows of the table in this order."""

SHOWN = 3
"""Examples named in a reason (then how many more)."""


def _check(check_id: str, status: Status, reason: str, *, optional: bool = False) -> Check:
    return Check(check_id, CHECKS[check_id], status, reason, optional)


def passed(check_id: str, reason: str) -> Check:
    return _check(check_id, Status.PASS, reason)


def failed(check_id: str, reason: str) -> Check:
    return _check(check_id, Status.FAIL, reason)


def unchecked(check_id: str, reason: str, *, optional: bool = False) -> Check:
    return _check(check_id, Status.NOT_CHECKED, reason, optional=optional)


def _examples(items: Sequence[str]) -> str:
    shown = "; ".join(items[:SHOWN])
    return shown + (f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def _short(text: str | None, length: int = 120) -> str:
    text = text or ""
    return text if len(text) <= length else text[: length - 1] + "…"


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _asked(observations: Observations) -> list[Asked]:
    """Every request sent, in the order they were sent."""
    candidates = (
        observations.first,
        observations.again,
        observations.redelivered,
        observations.invalid_json,
        observations.invalid_schema,
        observations.unsigned,
        observations.impostor,
    )
    return [asked for asked in candidates if asked is not None]


def _all_replies(observations: Observations) -> list[tuple[str, Reply]]:
    """Every reply received, with what it answered (the request's label, or ``a stray reply``)."""
    found = [(asked.label, reply) for asked in _asked(observations) for reply in asked.replies]
    found.extend(("a reply to no request of the kit", reply) for reply in observations.strays)
    return found


def _answered_requests(observations: Observations) -> list[tuple[Asked, Answer]]:
    """The answers the inventory checks judge: the newest answer to each valid, signed request."""
    found = []
    for asked in (observations.first, observations.again, observations.redelivered):
        if asked is None:
            continue
        answer = newest(asked.replies)
        if answer is not None and not answer.errors:
            found.append((asked, answer))
    return found


def judge(observations: Observations, validator: ReplyValidator) -> Result:
    """Every check of ``CHECKS`` on what one run observed."""
    with remembered():
        return _judge(observations, validator)


def _judge(observations: Observations, validator: ReplyValidator) -> Result:
    if observations.unreachable is not None:
        checks = [failed("answered", observations.unreachable)]
        checks.extend(unchecked(check_id, "no request reached the service") for check_id in list(CHECKS)[1:])
        return Result(observations.service, observations.period, observations.namespace, tuple(checks))
    judges: dict[str, Callable[[Observations], Check]] = {
        "answered": answered,
        "schema": lambda seen: schema(seen, validator),
        "user_id": user_id,
        "correlation": correlation,
        "chunks": chunks,
        "unique": unique,
        "inventory": inventory,
        "invalid_json": lambda seen: invalid(seen, "invalid_json", seen.invalid_json),
        "invalid_schema": lambda seen: invalid(seen, "invalid_schema", seen.invalid_schema),
        "no_user_id": lambda seen: never_answered(seen, "no_user_id", seen.unsigned),
        "impostor": impostor,
        "redelivery": redelivery,
        "limits": limits,
    }
    checks = []
    for check_id, judge_one in judges.items():
        skipped = observations.skipped.get(check_id)
        checks.append(unchecked(check_id, skipped) if skipped else judge_one(observations))
    return Result(observations.service, observations.period, observations.namespace, tuple(checks))


def answered(observations: Observations) -> Check:
    """The first request's answer: its last chunk (and every chunk before it) by the deadline, no
    error reply. An incomplete answer whose last chunk came in time passes here; ``chunks`` fails it."""
    asked = observations.first
    if asked is None:
        return unchecked("answered", "the first request was not sent")
    timeout = _seconds(asked.sent_at, asked.deadline)
    answer = newest(asked.replies)
    if answer is None:
        hint = ""
        if any(reply.correlation_id is None for reply in observations.strays):
            hint = " (replies without a correlation_id came: see correlation)"
        if asked.replies:
            return failed("answered", f"no readable reply to {asked.label}: every reply was unreadable{hint}")
        return failed("answered", f"no reply to {asked.label} within its deadline ({timeout:g}s){hint}")
    if answer.errors:
        return failed(
            "answered", f"{asked.label} was answered with an error: {_short(answer.errors[0].error)}"
        )
    lasts = answer.lasts
    if not lasts:
        return failed(
            "answered",
            f"no last chunk by the deadline ({timeout:g}s): {len(answer.chunks)} chunk(s) received",
        )
    at = lasts[0].reply.at
    if at > asked.deadline:
        late = _seconds(asked.deadline, at)
        return failed("answered", f"the last chunk came {late:.2f}s after the deadline ({timeout:g}s)")
    records = len(answer.records())
    took = _seconds(asked.sent_at, max(part.reply.at for part in answer.chunks))
    return passed(
        "answered",
        f"{records} record(s) in {len(answer.chunks)} chunk(s) in {took:.2f}s (deadline {timeout:g}s)",
    )


def schema(observations: Observations, validator: ReplyValidator) -> Check:
    replies = _all_replies(observations)
    if not replies:
        return unchecked("schema", "no reply came")
    problems: list[str] = []
    bad = 0
    for label, reply in replies:
        found = validator.problems(reply)
        if found:
            bad += 1
            part = read(reply)
            chunk = f" chunk {part.seq}" if part.seq is not None and part.status == "ok" else ""
            problems.extend(f"{label}{chunk}: {problem}" for problem in found)
    if problems:
        return failed("schema", f"{bad} of {len(replies)} replies invalid: {_examples(problems)}")
    return passed("schema", f"{len(replies)} replies valid against {validator.source} and the model")


def user_id(observations: Observations) -> Check:
    replies = _all_replies(observations)
    if not replies:
        return unchecked("user_id", "no reply came")
    expected = observations.expected_user
    missing = sum(1 for _, reply in replies if reply.user_id is None)
    others = Counter(reply.user_id for _, reply in replies if reply.user_id not in (None, expected))
    why = f" ({observations.expected_user_why})" if observations.expected_user_why else ""
    if missing:
        return failed(
            "user_id",
            f"{missing} of {len(replies)} replies carry no user_id: the coordinator ignores them "
            f"(rejected_sender); publish with user_id = the service's broker user",
        )
    if others:
        names = ", ".join(f"{user!r} ({count})" for user, count in others.most_common())
        return failed("user_id", f"replies from {names}, expected {expected!r}{why}")
    return passed("user_id", f"all {len(replies)} replies carry user_id {expected!r}")


def correlation(observations: Observations) -> Check:
    replies = _all_replies(observations)
    if not replies:
        return unchecked("correlation", "no reply came")
    problems: list[str] = []
    for reply in observations.strays:
        if reply.correlation_id is None:
            problems.append("a reply without correlation_id")
        else:
            problems.append(f"a reply with correlation_id {reply.correlation_id[:40]!r}, no request's")
    for asked in _asked(observations):
        for reply in asked.replies:
            part = read(reply)
            if part.document is None:
                continue  # not JSON: the schema check says so
            named = part.document.get("request_id")
            if named != asked.request_id:
                problems.append(
                    f"{asked.label}: request_id {str(named)[:40]!r} in the body, not the request's"
                )
            service = part.document.get("service")
            if service != observations.service:
                problems.append(f"{asked.label}: service {str(service)[:40]!r}, not {observations.service!r}")
    if problems:
        counted = Counter(problems)
        listed = [f"{text} (x{count})" if count > 1 else text for text, count in counted.items()]
        return failed("correlation", _examples(listed))
    return passed(
        "correlation",
        f"all {len(replies)} replies carry their request's correlation_id, request_id and the service's name",
    )


def _chunk_problems(asked: Asked, answer: Answer) -> list[str]:
    label = asked.label
    found: list[str] = []
    unread = [part for part in answer.parts if part.status == "ok" and part.seq is None]
    if unread:
        found.append(f"{label}: {len(unread)} chunk(s) without a readable seq")
    bodies: dict[int, set[bytes]] = defaultdict(set)
    for part in answer.chunks:
        if part.seq is not None:
            bodies[part.seq].add(part.reply.body)
    for seq, variants in sorted(bodies.items()):
        if len(variants) > 1:
            found.append(f"{label}: chunk {seq} sent twice with different contents")
    lasts = answer.lasts
    if not lasts:
        return [*found, f"{label}: no last chunk ({len(answer.chunks)} chunk(s) received)"]
    if len({part.seq for part in lasts}) > 1:
        numbers = ", ".join(str(part.seq) for part in lasts)
        found.append(f"{label}: {len(lasts)} last chunks (seq {numbers})")
    last = lasts[0]
    assert last.seq is not None  # lasts are chunks with a seq
    seqs = answer.seqs
    missing = sorted(set(range(last.seq + 1)) - seqs)
    if missing:
        found.append(
            f"{label}: missing seq {', '.join(map(str, missing[:10]))} before the last chunk {last.seq}"
        )
    beyond = sorted(seq for seq in seqs if seq > last.seq)
    if beyond:
        found.append(f"{label}: chunk(s) {', '.join(map(str, beyond[:10]))} after the last chunk {last.seq}")
    records = len(answer.records())
    if last.total != records:
        found.append(f"{label}: the last chunk says total_records {last.total}, the answer holds {records}")
    return found


def chunks(observations: Observations) -> Check:
    judged = _answered_requests(observations)
    if not judged:
        return unchecked("chunks", "no answer with records came")
    problems = [problem for asked, answer in judged for problem in _chunk_problems(asked, answer)]
    if problems:
        return failed("chunks", _examples(problems))
    sizes = ", ".join(str(len(answer.chunks)) for _, answer in judged)
    return passed(
        "chunks",
        f"{len(judged)} answer(s) ({sizes} chunks): seq from 0 without a gap, one last chunk, "
        "total_records right",
    )


def unique(observations: Observations) -> Check:
    judged = _answered_requests(observations)
    if not judged:
        return unchecked("unique", "no answer with records came")
    problems: list[str] = []
    for asked, answer in judged:
        where: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for seq, record in answer.records():
            where[record_key(record)].append(seq)
        for key, seqs in where.items():
            if len(seqs) > 1:
                chunks_named = ", ".join(str(seq) for seq in seqs[:5])
                problems.append(
                    f"{asked.label}: ({', '.join(key)}) {len(seqs)} times (chunk(s) {chunks_named})"
                )
    if problems:
        return failed("unique", _examples(problems))
    return passed("unique", f"each (account, resource, metric) once in each of {len(judged)} answer(s)")


def inventory(observations: Observations) -> Check:
    first, again = observations.first, observations.again
    if first is None or again is None:
        return unchecked("inventory", "the period was not asked twice")
    answers_ = [newest(first.replies), newest(again.replies)]
    if any(answer is None or answer.errors or not answer.finished for answer in answers_):
        return unchecked("inventory", "it needs two complete answers, and there were not")
    one, two = (Counter(canonical(record) for _, record in answer.records()) for answer in answers_ if answer)
    if one == two:
        return passed("inventory", f"the same {sum(one.values())} record(s) both times")
    only_first = sorted((one - two).elements())
    only_second = sorted((two - one).elements())
    parts = []
    if only_first:
        parts.append(f"{len(only_first)} only in the first answer, e.g. {only_first[0][:200]}")
    if only_second:
        parts.append(f"{len(only_second)} only in the second, e.g. {only_second[0][:200]}")
    return failed("inventory", f"the same closed period gave different records: {'; '.join(parts)}")


def invalid(observations: Observations, check_id: str, asked: Asked | None) -> Check:
    """An invalid request: an error reply, or dead-lettered; never an inventory."""
    if asked is None:
        return unchecked(check_id, "not sent")
    parts = [read(reply) for reply in asked.replies]
    answered_ok = [part for part in parts if part.status == "ok"]
    if answered_ok:
        return failed(check_id, f"{asked.label} was answered with status ok: it must be refused")
    errors = [part for part in parts if part.is_error]
    lettered = " and dead-lettered" if asked.dead_lettered else ""
    if errors:
        return passed(check_id, f"an error reply ({_short(errors[0].error)}){lettered}")
    if parts:
        return failed(check_id, f"{asked.label} got {len(parts)} reply(ies), none an error reply")
    if asked.dead_lettered:
        return passed(check_id, "no reply; dead-lettered")
    waited = f"{asked.waited:g}s"
    if asked.dead_lettered is None:
        return unchecked(
            check_id,
            f"no error reply within {waited}, and dead letters could not be observed "
            f"({observations.dead_letters})",
        )
    return failed(
        check_id,
        f"neither an error reply nor a dead letter within {waited}: reject it (requeue=false) "
        "so that it is dead-lettered, or reply with an error",
    )


def never_answered(observations: Observations, check_id: str, asked: Asked | None) -> Check:
    if asked is None:
        return unchecked(check_id, "not sent")
    if asked.replies:
        statuses = Counter(read(reply).status or "unreadable" for reply in asked.replies)
        named = ", ".join(f"{count} {status}" for status, count in statuses.items())
        return failed(
            check_id,
            f"{asked.label} was answered ({named}): answer only the coordinator's broker user, or "
            "an inventory goes to a reply_to anyone chose",
        )
    lettered = "; dead-lettered" if asked.dead_lettered else ""
    return passed(check_id, f"no reply within {asked.waited:g}s{lettered}")


def impostor(observations: Observations) -> Check:
    if observations.impostor_problem is not None:
        return unchecked("impostor", observations.impostor_problem)
    if observations.impostor is None:
        return unchecked(
            "impostor", "optional: give --impostor-url, a URL of another broker user", optional=True
        )
    return never_answered(observations, "impostor", observations.impostor)


def redelivery(observations: Observations) -> Check:
    again, redelivered = observations.again, observations.redelivered
    if again is None or redelivered is None:
        return unchecked("redelivery", "the request was not delivered again")
    before = newest(again.replies)
    if before is None or before.errors or not before.finished:
        return unchecked("redelivery", "it needs a complete first answer, and there was not")
    after = newest(redelivered.replies)
    if after is None:
        return failed(
            "redelivery",
            f"{redelivered.label} was not answered within "
            f"{_seconds(redelivered.sent_at, redelivered.deadline):g}s: a request delivered again (its "
            "service died mid-answer) must be answered again",
        )
    if before.answer_id is None or after.answer_id is None:
        return failed(
            "redelivery",
            "chunks carry no chunk.answer_id: when a request is delivered again the coordinator "
            "cannot tell the new answer from what it stored of the first, and mixes them",
        )
    if after.answer_id == before.answer_id:
        return failed(
            "redelivery",
            f"answered again with the same answer_id {after.answer_id[:40]!r}: each computation of an "
            "answer needs a new one",
        )
    return passed(
        "redelivery",
        f"answered again with a new answer_id ({after.answer_id[:12]}…, first {before.answer_id[:12]}…)",
    )


def limits(observations: Observations) -> Check:
    replies = [reply for _, reply in _all_replies(observations)]
    if not replies:
        return unchecked("limits", "no reply came")
    problems: list[str] = []
    largest = max(len(reply.body) for reply in replies)
    over = [reply for reply in replies if len(reply.body) > MAX_REPLY_BYTES]
    if over:
        problems.append(f"{len(over)} reply(ies) above max_reply_bytes {MAX_REPLY_BYTES} (largest {largest})")
    most_in_chunk = 0
    for reply in replies:
        part = read(reply)
        most_in_chunk = max(most_in_chunk, len(part.records))
        if len(part.records) > MAX_RECORDS_PER_CHUNK:
            problems.append(
                f"a chunk of {len(part.records)} records, above max_records_per_chunk {MAX_RECORDS_PER_CHUNK}"
            )
        if part.seq is not None and part.seq >= MAX_CHUNKS_PER_ANSWER:
            problems.append(f"chunk seq {part.seq}, not below max_chunks_per_answer {MAX_CHUNKS_PER_ANSWER}")
        problems.extend(_attribute_problems(part.records))
    for asked, answer in _answered_requests(observations):
        held = len(answer.records())
        announced = max((part.total or 0 for part in answer.lasts), default=0)
        if max(held, announced) > MAX_RECORDS_PER_ANSWER:
            problems.append(
                f"{asked.label}: {max(held, announced)} records, above max_records_per_answer "
                f"{MAX_RECORDS_PER_ANSWER}"
            )
    if problems:
        return failed("limits", _examples(list(dict.fromkeys(problems))))
    most_attributes = max(
        (len(record.get("attributes") or ()) for reply in replies for record in read(reply).records),
        default=0,
    )
    return passed(
        "limits",
        f"largest reply {largest:,} bytes (max {MAX_REPLY_BYTES:,}); at most {most_in_chunk:,} records in "
        f"a chunk (max {MAX_RECORDS_PER_CHUNK:,}); at most {most_attributes} attribute(s) on a record (max "
        f"{MAX_ATTRIBUTES}), none longer than {MAX_ATTRIBUTE_LENGTH} characters",
    )


def _attribute_problems(records: Iterable[object]) -> list[str]:
    found = []
    for record in records:
        if not isinstance(record, dict):
            continue
        attributes = record.get("attributes")
        if not isinstance(attributes, dict):
            continue
        where = f"record ({', '.join(record_key(record))})"
        if len(attributes) > MAX_ATTRIBUTES:
            found.append(f"{where}: {len(attributes)} attributes, above max_attributes {MAX_ATTRIBUTES}")
        for name, value in attributes.items():
            if len(str(name)) > MAX_ATTRIBUTE_LENGTH or (
                isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH
            ):
                found.append(
                    f"{where}: attribute {str(name)[:40]!r} longer than max_attribute_length "
                    f"{MAX_ATTRIBUTE_LENGTH}"
                )
    return found


__all__ = ["CHECKS", "judge"]
