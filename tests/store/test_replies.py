"""What the services answered: gathers, raw chunks and their records (both backends)."""

from __future__ import annotations

from uuid import UUID

import pytest
from sqlalchemy import select

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema
from accounting.store.repository import (
    NOT_ASKED,
    WAITING,
    ChunkToStore,
    LeaseLost,
    RejectedChunk,
    ReportStore,
    StoredReply,
)
from tests.store.support import A, B, aborted, chunk, count, minutes, new_report, record, report_at


async def gathering(store: ReportStore) -> tuple[UUID, int]:
    """A report of ``A`` in GATHERING with its first gather begun; both services requested."""
    rid = (await report_at(store, ReportStatus.GATHERING)).report_id
    gather_id = await store.begin_gather(
        rid, A, attempt="first", at=minutes(2), requested=("compute", "storage")
    )
    return rid, gather_id


def ok(service: str, records: int, carried_from: UUID | None = None) -> StoredReply:
    return StoredReply(service, f"req-{service}", "ok", None, None, records, carried_from)


async def accepted_flags(store: ReportStore, gather_id: int, service: str) -> list[bool]:
    chunks = schema.reply_chunks
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(chunks.c.accepted)
            .where(chunks.c.gather_id == gather_id, chunks.c.service == service)
            .order_by(chunks.c.id)
        )
        return [row.accepted for row in rows]


# --- gathers -------------------------------------------------------------------------------------


async def test_begin_gather_makes_every_requested_service_not_asked(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)

    assert await store.gather_of(rid) == gather_id
    assert await store.replies(rid) == {
        service: StoredReply(service, None, NOT_ASKED, None, None, 0) for service in ("compute", "storage")
    }


async def test_mark_asked_and_save_outcomes_record_each_services_state(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)

    await store.mark_asked(rid, A, gather_id, {"compute": "req-compute"}, minutes(3))
    asked = await store.replies(rid)
    failed = StoredReply("storage", "req-storage", "failed", "service_error", "internal: disk é", 0)
    await store.save_outcomes(rid, A, gather_id, [ok("compute", 2), failed], minutes(4))

    assert asked["compute"] == StoredReply("compute", "req-compute", WAITING, None, None, 0)
    assert asked["storage"].state == NOT_ASKED
    assert await store.replies(rid) == {"compute": ok("compute", 2), "storage": failed}


async def test_a_gather_of_a_report_without_one_is_none(store: ReportStore) -> None:
    record = await new_report(store)

    assert await store.gather_of(record.report_id) is None
    assert await store.reply_bodies(record.report_id, "compute") == []


async def test_begin_gather_again_drops_the_earlier_attempts_chunks_records_and_replies(
    store: ReportStore,
) -> None:
    rid, first = await gathering(store)
    await store.mark_asked(rid, A, first, {"compute": "req-compute"}, minutes(3))
    await store.append_chunks(rid, A, first, [chunk("compute", 0, [record("acct-1")])], minutes(3))
    await store.save_outcomes(rid, A, first, [ok("compute", 1)], minutes(4))

    await store.move(rid, ReportStatus.GATHERING, minutes(5), "resumed", owner=A)
    second = await store.begin_gather(rid, A, attempt="second", at=minutes(5), requested=("compute",))

    assert await store.gather_of(rid) == second
    assert await store.replies(rid) == {"compute": StoredReply("compute", None, NOT_ASKED, None, None, 0)}
    assert await store.reply_bodies(rid, "compute") == []
    assert await store.record_units(second) == []
    assert await store.usage_page(second, "", 10) == []
    assert [await count(store, table) for table in ("reply_chunks", "usage_records")] == [0, 0]
    assert await count(store, "gathers", report_id=str(rid)) == 1


# --- carried answers (a replay reuses the services that answered well) -----------------------------


async def answered(store: ReportStore) -> tuple[UUID, list[str]]:
    """Revision 1: compute answered with two chunks (three records), storage failed."""
    rid, gather_id = await gathering(store)
    chunks = [
        chunk("compute", 0, [record("acct-1"), record("acct-2")]),
        chunk("compute", 1, [record("acct-3")]),
    ]
    failure = ChunkToStore("storage", "req-storage", None, "not json", accepted=False)
    await store.append_chunks(rid, A, gather_id, [*chunks, failure], minutes(3))
    failed = StoredReply("storage", "req-storage", "failed", "invalid_reply", "not json", 0)
    await store.save_outcomes(rid, A, gather_id, [ok("compute", 3), failed], minutes(4))
    await store.finish_aborted(rid, aborted(), minutes(4), "storage: invalid reply", owner=A)
    return rid, [c.body for c in chunks]


async def replay(store: ReportStore, source: UUID) -> UUID:
    """Revision 2 of October asking storage again and reusing compute's answer of ``source``."""
    record = await report_at(
        store, ReportStatus.GATHERING, revision=2, requested=("storage",), carried_from=source
    )
    return record.report_id


async def test_begin_gather_copies_the_carried_services_good_answers(store: ReportStore) -> None:
    source, bodies = await answered(store)
    source_gather = await store.gather_of(source)
    assert source_gather is not None
    rid = await replay(store, source)

    gather_id = await store.begin_gather(
        rid,
        A,
        attempt="replay",
        at=minutes(6),
        requested=("storage",),
        carried=("compute",),
        carried_from=source,
    )

    assert await store.replies(rid) == {
        "compute": ok("compute", 3, carried_from=source),
        "storage": StoredReply("storage", None, NOT_ASKED, None, None, 0),
    }
    assert await store.reply_bodies(rid, "compute") == bodies
    assert await store.reply_bodies(rid, "storage") == []
    assert await store.record_units(gather_id) == [("compute", "vcpu_seconds", "vCPU-s", 3)]
    assert sorted(await store.usage_page(gather_id, "", 10)) == [
        (f"acct-{n}", "compute", "vcpu_seconds", "vCPU-s", "3600") for n in (1, 2, 3)
    ]
    assert await store.record_units(source_gather) == [("compute", "vcpu_seconds", "vCPU-s", 3)]
    assert await store.reply_bodies(source, "storage") == ["not json"]


@pytest.mark.parametrize("carried", [("storage",), ("network",), ("compute", "storage")])
async def test_carrying_a_service_without_a_good_answer_raises_and_writes_nothing(
    store: ReportStore, carried: tuple[str, ...]
) -> None:
    source, _ = await answered(store)
    rid = await replay(store, source)

    with pytest.raises(ValueError, match="no good answer"):
        await store.begin_gather(
            rid,
            A,
            attempt="replay",
            at=minutes(6),
            requested=("compute",),
            carried=carried,
            carried_from=source,
        )

    assert await store.gather_of(rid) is None
    assert await store.replies(rid) == {}


async def test_carrying_services_without_the_report_they_come_from_raises(store: ReportStore) -> None:
    rid = (await report_at(store, ReportStatus.GATHERING)).report_id

    with pytest.raises(ValueError, match="carried services need the report"):
        await store.begin_gather(
            rid, A, attempt="x", at=minutes(2), requested=("storage",), carried=("compute",)
        )

    assert await store.gather_of(rid) is None


# --- chunks and records --------------------------------------------------------------------------


async def test_append_chunks_stores_the_raw_bodies_and_the_records(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)
    first = chunk("compute", 0, [record("acct-1"), record("acct-1", metric="memory_mib_seconds")])
    second = chunk("storage", 0, [record("acct-2", "bucket-1", "byte_seconds")])
    third = chunk("compute", 1, [record("acct-2"), record("acct-3")])
    failed = ChunkToStore("storage", "req-storage", None, '{"status":"error"}', accepted=False)

    assert await store.append_chunks(rid, A, gather_id, [first, second], minutes(3)) == []
    assert await store.append_chunks(rid, A, gather_id, [third, failed], minutes(4)) == []

    assert await store.reply_bodies(rid, "compute") == [first.body, third.body]
    assert await store.reply_bodies(rid, "storage") == [second.body, failed.body]
    assert await accepted_flags(store, gather_id, "storage") == [True, False]
    assert await store.record_units(gather_id) == [
        ("compute", "memory_mib_seconds", "vCPU-s", 1),
        ("compute", "vcpu_seconds", "vCPU-s", 3),
        ("storage", "byte_seconds", "vCPU-s", 1),
    ]
    assert await store.usage_of_account(gather_id, "acct-2") in (
        [
            ("acct-2", "storage", "byte_seconds", "vCPU-s", "3600"),
            ("acct-2", "compute", "vcpu_seconds", "vCPU-s", "3600"),
        ],
        [
            ("acct-2", "compute", "vcpu_seconds", "vCPU-s", "3600"),
            ("acct-2", "storage", "byte_seconds", "vCPU-s", "3600"),
        ],
    )


async def test_a_chunk_repeating_a_record_within_itself_is_rejected_and_the_rest_of_the_batch_stored(
    store: ReportStore,
) -> None:
    rid, gather_id = await gathering(store)
    good = chunk("compute", 0, [record("acct-1")])
    twice = chunk("storage", 0, [record("acct-2", "bucket-1"), record("acct-2", "bucket-1")])
    after = chunk("compute", 1, [record("acct-3")])

    rejected = await store.append_chunks(rid, A, gather_id, [good, twice, after], minutes(3))

    assert [(r.service, r.seq) for r in rejected] == [("storage", 0)]
    assert "lists account 'acct-2' resource 'bucket-1' metric 'vcpu_seconds' twice" in rejected[0].message
    assert await store.reply_bodies(rid, "storage") == [twice.body]
    assert await accepted_flags(store, gather_id, "storage") == [False]
    assert await accepted_flags(store, gather_id, "compute") == [True, True]
    assert sorted(r[0] for r in await store.usage_page(gather_id, "", 10)) == ["acct-1", "acct-3"]


async def test_a_chunk_repeating_a_record_of_an_earlier_chunk_of_the_answer_is_rejected(
    store: ReportStore,
) -> None:
    rid, gather_id = await gathering(store)
    first = chunk("compute", 0, [record("acct-1"), record("acct-2")])
    await store.append_chunks(rid, A, gather_id, [first], minutes(3))
    again = chunk("compute", 1, [record("acct-3"), record("acct-2")])
    other = chunk("compute", 2, [record("acct-4")])

    rejected = await store.append_chunks(rid, A, gather_id, [again, other], minutes(4))

    assert rejected == [RejectedChunk("compute", 1, rejected[0].message)]
    assert "earlier chunk" in rejected[0].message
    assert await store.reply_bodies(rid, "compute") == [first.body, again.body, other.body]
    assert await accepted_flags(store, gather_id, "compute") == [True, False, True]
    assert sorted(r[0] for r in await store.usage_page(gather_id, "", 10)) == ["acct-1", "acct-2", "acct-4"]


async def test_a_chunk_repeating_an_earlier_chunk_of_the_same_batch_is_rejected(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)
    first = chunk("compute", 0, [record("acct-1")])
    again = chunk("compute", 1, [record("acct-1")])

    rejected = await store.append_chunks(rid, A, gather_id, [first, again], minutes(3))

    assert [(r.service, r.seq) for r in rejected] == [("compute", 1)]
    assert await accepted_flags(store, gather_id, "compute") == [True, False]
    assert await store.record_units(gather_id) == [("compute", "vcpu_seconds", "vCPU-s", 1)]


async def test_the_same_resource_and_metric_from_two_services_is_fine(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)
    same = [record("acct-1", "shared-1", "bytes")]

    rejected = await store.append_chunks(
        rid, A, gather_id, [chunk("compute", 0, same), chunk("storage", 0, same)], minutes(3)
    )

    assert rejected == []
    assert sorted(r[1] for r in await store.usage_of_account(gather_id, "acct-1")) == ["compute", "storage"]


async def test_usage_page_returns_records_in_account_order_after_the_given_account(
    store: ReportStore,
) -> None:
    rid, gather_id = await gathering(store)
    accounts = [f"acct-{n:03d}" for n in range(1, 31)]
    compute = [record(account) for account in reversed(accounts)]
    storage = [record(account, "bucket", "byte_seconds") for account in accounts[::2]]
    await store.append_chunks(
        rid, A, gather_id, [chunk("compute", 0, compute), chunk("storage", 0, storage)], minutes(3)
    )

    first = await store.usage_page(gather_id, "", 10)
    rest = await store.usage_page(gather_id, "acct-006", 1000)
    pages: list[str] = []
    after = ""
    while page := await store.usage_page(gather_id, after, 7):
        pages.extend(row[0] for row in page)
        after = page[-1][0]

    assert [row[0] for row in first] == sorted(row[0] for row in first)
    assert sorted(row[0] for row in first) == ["acct-001"] * 2 + ["acct-002"] + ["acct-003"] * 2 + [
        "acct-004"
    ] + ["acct-005"] * 2 + ["acct-006", "acct-007"]
    assert [row[0] for row in rest] == sorted(row[0] for row in rest)
    assert {row[0] for row in rest} == set(accounts[6:])
    assert len(rest) == 24 + 12
    assert pages == sorted(pages)
    assert set(pages) == set(accounts)
    assert await store.usage_of_account(gather_id, "acct-004") == [
        ("acct-004", "compute", "vcpu_seconds", "vCPU-s", "3600")
    ]
    assert await store.usage_of_account(gather_id, "acct-999") == []


# --- fencing ---------------------------------------------------------------------------------------


async def test_reply_writes_by_a_coordinator_that_does_not_hold_the_report_raise_and_write_nothing(
    store: ReportStore,
) -> None:
    rid, gather_id = await gathering(store)
    replies = await store.replies(rid)

    with pytest.raises(LeaseLost):
        await store.begin_gather(rid, B, attempt="b", at=minutes(3), requested=("compute",))
    with pytest.raises(LeaseLost):
        await store.mark_asked(rid, B, gather_id, {"compute": "req-b"}, minutes(3))
    with pytest.raises(LeaseLost):
        await store.append_chunks(rid, B, gather_id, [chunk("compute", 0, [record("acct-1")])], minutes(3))
    with pytest.raises(LeaseLost):
        await store.save_outcomes(rid, B, gather_id, [ok("compute", 1)], minutes(3))

    assert await store.gather_of(rid) == gather_id
    assert await store.replies(rid) == replies
    assert await store.reply_bodies(rid, "compute") == []
    assert await count(store, "usage_records") == 0


async def test_a_chunk_arriving_after_the_gather_moved_on_is_refused(store: ReportStore) -> None:
    rid, gather_id = await gathering(store)
    await store.move(rid, ReportStatus.NORMALIZING, minutes(4), "every service answered", owner=A)

    with pytest.raises(LeaseLost, match="normalizing"):
        await store.append_chunks(rid, A, gather_id, [chunk("compute", 9, [record("acct-9")])], minutes(5))

    assert await store.reply_bodies(rid, "compute") == []


async def test_after_an_abort_the_builder_stores_answers_until_it_releases_the_report(
    store: ReportStore,
) -> None:
    rid, gather_id = await gathering(store)
    await store.finish_aborted(
        rid, aborted(), minutes(3), "storage: deadline", owner=A, collect_until=minutes(8)
    )
    late = chunk("compute", 0, [record("acct-1")])

    assert await store.append_chunks(rid, A, gather_id, [late], minutes(4)) == []
    await store.save_outcomes(rid, A, gather_id, [ok("compute", 1)], minutes(5))
    await store.release(rid, minutes(5), owner=A)
    with pytest.raises(LeaseLost, match="held by nobody"):
        await store.append_chunks(rid, A, gather_id, [chunk("compute", 1, [record("acct-2")])], minutes(6))

    assert await store.reply_bodies(rid, "compute") == [late.body]
    assert (await store.replies(rid))["compute"] == ok("compute", 1)
