"""The outbox as relays see it: windows of claimed rows, marked sent after their confirms."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC

from sqlalchemy import select

from accounting.core.lifecycle import ReportStatus, Transition
from accounting.store import schema
from accounting.store.repository import OutboxRow, OutboxStatus, ReportStore
from contracts import Period
from tests.store.support import (
    NOVEMBER,
    OCTOBER,
    Backend,
    aborted_report,
    minutes,
    priced_report,
    publishing_report,
    queued,
    status,
)


def ids(rows: list[OutboxRow]) -> list[int]:
    return [row.id for row in rows]


# --- pending and claims --------------------------------------------------------------------------


async def test_pending_returns_the_oldest_ready_rows_first_up_to_the_limit(store: ReportStore) -> None:
    october, _, _ = await publishing_report(store, period=OCTOBER)
    await publishing_report(store, period=NOVEMBER)
    await priced_report(store, period=Period.month("2026-12"))
    everything = await store.pending()
    await store.mark_sent(everything[:1], minutes(20))

    assert len(everything) == 6
    assert ids(everything) == sorted(ids(everything))
    assert [r.report_id for r in everything[:3]] == [october.report_id] * 3
    assert await store.pending(limit=2) == everything[1:3]
    assert await store.pending(limit=100) == everything[1:]


async def test_claim_window_takes_the_oldest_rows_first_up_to_the_limit(store: ReportStore) -> None:
    await publishing_report(store, accounts=5)
    everything = await store.pending()
    invoices = everything[:-1]

    first = await store.claim_window(minutes(20), minutes(21), limit=3)
    second = await store.claim_window(minutes(20), minutes(21), limit=3)

    assert first == invoices[:3]
    assert second == invoices[3:]
    assert {row.claim for row in first} != {row.claim for row in second}
    assert len({row.claim for row in first}) == 1
    assert await store.claim_window(minutes(20), minutes(21)) == []
    assert await store.pending() == everything


async def test_a_claim_holds_its_rows_until_it_expires(store: ReportStore) -> None:
    await publishing_report(store)
    claimed = await store.claim_window(minutes(20), minutes(21))

    assert await store.claim_window(minutes(20.5), minutes(22)) == []
    assert await store.claim_window(minutes(21), minutes(22)) == []
    assert await store.claim_window(minutes(21.5), minutes(22.5)) == claimed


async def test_extend_claim_keeps_the_rows_past_the_first_expiry(store: ReportStore) -> None:
    await publishing_report(store)
    claimed = await store.claim_window(minutes(20), minutes(21))
    assert claimed[0].claim is not None

    await store.extend_claim(claimed[0].claim, minutes(25))

    assert await store.claim_window(minutes(22), minutes(23)) == []
    assert await store.claim_window(minutes(26), minutes(27)) == claimed


async def test_release_claims_hands_unsent_rows_back_at_once(store: ReportStore) -> None:
    await publishing_report(store)
    claimed = await store.claim_window(minutes(20), minutes(21))

    await store.release_claims(claimed)

    assert await store.claim_window(minutes(20), minutes(21)) == claimed


async def test_a_sent_row_is_never_claimed_again(store: ReportStore) -> None:
    await publishing_report(store, accounts=3)
    first, *rest = await store.claim_window(minutes(20), minutes(21))
    await store.mark_sent([first], minutes(20))
    await store.release_claims([first, *rest])

    assert await store.claim_window(minutes(30), minutes(31)) == rest


async def test_the_final_row_waits_for_every_earlier_row_of_its_report_even_one_claimed_elsewhere(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store, accounts=3)
    final = (await store.pending())[-1]
    first, *rest = await store.claim_window(minutes(20), minutes(21), limit=1) + await store.claim_window(
        minutes(20), minutes(21)
    )

    await store.mark_sent(rest, minutes(20))
    while_first_claimed = await store.claim_window(minutes(20), minutes(21))
    await store.release_claims([first])
    while_first_unsent = await store.claim_window(minutes(20), minutes(21), limit=1)
    await store.mark_sent(while_first_unsent, minutes(20))
    after_all_sent = await store.claim_window(minutes(20), minutes(21))

    assert (final.final, final.message_id) == (True, f"{record.report_id}/report.completed")
    assert while_first_claimed == []
    assert while_first_unsent == [first]
    assert after_all_sent == [final]


async def test_a_final_row_waits_only_for_its_own_report(store: ReportStore) -> None:
    await publishing_report(store, period=OCTOBER)
    aborted = await aborted_report(store, period=NOVEMBER)

    claimed = await store.claim_window(minutes(20), minutes(21))

    assert [row.report_id for row in claimed if row.final] == [aborted.report_id]
    assert len(claimed) == 3


async def test_two_concurrent_claims_never_take_the_same_row(store: ReportStore, backend: Backend) -> None:
    for month in range(1, 5):
        await publishing_report(store, accounts=5, period=Period.month(f"2026-{month:02d}"))
    invoices = [row for row in await store.pending(limit=100) if not row.final]

    async with queued(store, backend, "outbox", waiters=2):
        claiming = [
            asyncio.create_task(store.claim_window(minutes(20), minutes(21), limit=8)) for _ in range(2)
        ]
    by_a, by_b = await asyncio.gather(*claiming)
    rest = await store.claim_window(minutes(20), minutes(21))

    assert set(ids(by_a)).isdisjoint(ids(by_b))
    assert len(by_a) == len(by_b) == 8
    assert sorted([*by_a, *by_b, *rest], key=lambda r: r.id) == invoices


# --- marking rows sent or failed -----------------------------------------------------------------


async def test_mark_sent_completes_the_report_exactly_when_its_report_completed_is_marked(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store, accounts=3)
    *invoices, final = await store.pending()

    marked = [
        await store.mark_sent(invoices[:2], minutes(20)),
        await store.mark_sent(invoices[2:], minutes(21)),
    ]
    before_final = await status(store, record.report_id)
    completing = await store.mark_sent([final], minutes(22))
    again = await store.mark_sent([final], minutes(23))

    assert marked == [[], []]
    assert before_final is ReportStatus.PUBLISHING
    assert completing == [record.report_id]
    assert again == []
    assert await status(store, record.report_id) is ReportStatus.COMPLETED
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.COMPLETED, minutes(22), "every invoice and the report event confirmed"
    )
    assert (await store.outbox_status()).sent == 4


async def test_mark_sent_of_a_batch_with_two_reports_completes_the_one_whose_final_row_is_in_it(
    store: ReportStore,
) -> None:
    october, _, _ = await publishing_report(store, period=OCTOBER)
    november, _, _ = await publishing_report(store, period=NOVEMBER)
    rows = await store.pending()
    batch = [row for row in rows if row.report_id == october.report_id or not row.final]

    assert await store.mark_sent(batch, minutes(20)) == [october.report_id]

    assert await status(store, october.report_id) is ReportStatus.COMPLETED
    assert await status(store, november.report_id) is ReportStatus.PUBLISHING
    assert [row.report_id for row in await store.pending()] == [november.report_id]


async def test_report_aborted_rows_complete_nothing(store: ReportStore) -> None:
    record = await aborted_report(store)

    assert await store.mark_sent(await store.pending(), minutes(20)) == []

    assert await status(store, record.report_id) is ReportStatus.ABORTED
    assert await store.pending() == []


async def test_two_relays_marking_the_final_row_at_once_complete_the_report_once(
    store: ReportStore, backend: Backend
) -> None:
    record, _, _ = await publishing_report(store)
    *invoices, final = await store.pending()
    await store.mark_sent(invoices, minutes(20))

    async with queued(store, backend, "outbox", waiters=2):
        marking = [asyncio.create_task(store.mark_sent([final], minutes(21))) for _ in range(2)]
    results = await asyncio.gather(*marking)

    assert sorted(results, key=len) == [[], [record.report_id]]
    assert await status(store, record.report_id) is ReportStatus.COMPLETED
    assert [t.status for t in await store.history(record.report_id)].count(ReportStatus.COMPLETED) == 1


async def test_mark_failed_notes_the_error_counts_the_attempt_and_hands_the_row_back(
    store: ReportStore,
) -> None:
    record, _, _ = await publishing_report(store)
    first, *rest = await store.claim_window(minutes(20), minutes(21))

    await store.mark_failed([first], "NO_ROUTE: payments.invoices")
    again = await store.claim_window(minutes(20), minutes(21))
    await store.mark_failed(again, "ConnectionError: reset")

    outbox = schema.outbox
    async with store.engine.connect() as connection:
        error, attempts, claim = (
            await connection.execute(
                select(outbox.c.last_error, outbox.c.attempts, outbox.c.claim).where(outbox.c.id == first.id)
            )
        ).one()
    assert again == [replace(first, attempts=1)]
    assert (error, attempts, claim) == ("ConnectionError: reset", 2, None)
    assert len(rest) == 1
    assert (await store.pending())[0].attempts == 2
    assert await status(store, record.report_id) is ReportStatus.PUBLISHING


async def test_mark_failed_leaves_a_sent_row_sent(store: ReportStore) -> None:
    await publishing_report(store)
    first = (await store.pending())[0]
    await store.mark_sent([first], minutes(20))

    await store.mark_failed([first], "late failure")

    assert (await store.outbox_status()).sent == 1
    assert first.id not in ids(await store.pending())


# --- what ``reckon outbox`` shows ----------------------------------------------------------------


async def test_outbox_status_counts_pending_staged_and_sent_rows_and_the_last_error(
    store: ReportStore,
) -> None:
    empty = await store.outbox_status()
    await publishing_report(store, period=OCTOBER, accounts=3)
    await priced_report(store, period=NOVEMBER, accounts=2)
    first, second, *_ = await store.pending()
    await store.mark_sent([first], minutes(20))
    await store.mark_failed([second], "NO_ROUTE: payments.invoices")

    assert empty == OutboxStatus(0, 0, 0, None, None, None)
    assert await store.outbox_status() == OutboxStatus(
        pending=3,
        sent=1,
        staged=2,
        oldest_pending_at=minutes(10),  # made ready when October was issued (priced at 9)
        last_error="NO_ROUTE: payments.invoices",
        last_error_message_id=second.message_id,
    )
    counts = await store.outbox_counts()
    assert (counts.pending, counts.sent) == (3, 1)
    oldest = (await store.outbox_status()).oldest_pending_at
    assert oldest is not None and oldest.tzinfo is UTC
