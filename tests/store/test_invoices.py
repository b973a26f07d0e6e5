"""A report's invoices: staged while it is priced, issued all at once with its ReportCompleted."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from accounting.core.corrections import credit_note_for
from accounting.core.lifecycle import IllegalTransition, ReportStatus, Transition
from accounting.core.numbering import DRAFT_CREDIT_NOTE_FIELDS
from accounting.store import schema
from accounting.store.repository import LeaseLost, OutboxRow, ReportStore, StagedCreditNote
from contracts import CreditNoteIssued, InvoiceIssued, ReportAborted, ReportCompleted
from tests.store.support import (
    NOVEMBER,
    A,
    B,
    aborted,
    completed,
    count,
    get,
    invoice,
    minutes,
    priced_report,
    publishing_report,
    report_at,
    staged,
    status,
    unstamped,
)


async def stage(store: ReportStore, invoices: tuple[InvoiceIssued, ...], owner: str = A) -> None:
    """Stage a batch of one report's invoices (of the report the invoices name)."""
    await store.stage_invoices(
        invoices[0].report_id,
        owner,
        period_id=invoices[0].period.period_id,
        revision=invoices[0].revision,
        currency="EUR",
        invoices=staged(invoices),
        at=minutes(9),
    )


# --- staged invoices -----------------------------------------------------------------------------


async def test_staged_invoices_are_invisible_to_readers_and_to_the_relay(store: ReportStore) -> None:
    record, invoices, _ = await priced_report(store, accounts=3)

    outbox = await store.outbox_status()

    assert await store.invoices(report_id=record.report_id) == []
    assert await store.invoices(period_id="2026-10") == []
    assert await store.pending() == []
    assert await store.claim_window(minutes(20), minutes(21)) == []
    assert (outbox.pending, outbox.staged, outbox.sent, outbox.oldest_pending_at) == (0, 3, 0, None)
    assert await count(store, "invoices", report_id=str(record.report_id)) == len(invoices)


async def test_clear_staged_drops_an_earlier_pricing_attempts_invoices(store: ReportStore) -> None:
    record, invoices, _ = await priced_report(store, accounts=3)

    await store.clear_staged(record.report_id, A)
    cleared = await store.outbox_status()
    await stage(store, invoices[:2])
    await store.finish_completed(record.report_id, completed(invoices[:2]), minutes(10), "priced", owner=A)

    assert cleared.staged == 0
    assert await count(store, "invoices") == 2
    assert unstamped(await store.invoices(report_id=record.report_id)) == list(invoices[:2])
    assert [row.message_id for row in await store.pending()] == [
        *(str(i.invoice_id) for i in invoices[:2]),
        f"{record.report_id}/report.completed",
    ]


async def test_staging_an_invoice_twice_raises_and_writes_nothing_of_the_batch(store: ReportStore) -> None:
    _, invoices, _ = await priced_report(store, accounts=2)
    fresh = invoice("acct-09999", "5.00")

    with pytest.raises(IntegrityError):
        await stage(store, (fresh, invoices[0]))

    assert await count(store, "invoices", invoice_id=str(fresh.invoice_id)) == 0
    assert (await store.outbox_status()).staged == 2


async def test_staging_and_clearing_by_a_coordinator_that_does_not_hold_the_report_raise_lease_lost(
    store: ReportStore,
) -> None:
    record, _, _ = await priced_report(store, accounts=2)

    with pytest.raises(LeaseLost):
        await stage(store, (invoice("acct-09999", "5.00"),), owner=B)
    with pytest.raises(LeaseLost):
        await store.clear_staged(record.report_id, B)

    assert (await store.outbox_status()).staged == 2
    assert await count(store, "invoices") == 2


async def test_staging_outside_pricing_raises_lease_lost_even_for_the_holder(store: ReportStore) -> None:
    await report_at(store, ReportStatus.NORMALIZING)

    with pytest.raises(LeaseLost, match="normalizing"):
        await stage(store, (invoice("acct-00001", "1.00"),))

    assert await count(store, "invoices") == 0


# --- finishing a report --------------------------------------------------------------------------


async def test_finish_completed_issues_every_invoice_then_report_completed(store: ReportStore) -> None:
    record, invoices, done = await publishing_report(store, accounts=2)

    rows = await store.pending()

    assert [
        (r.exchange, r.routing_key, r.message_type, r.mandatory, r.final, r.message_id) for r in rows
    ] == [
        ("invoices", "invoice.issued", "InvoiceIssued", True, False, str(invoices[0].invoice_id)),
        ("invoices", "invoice.issued", "InvoiceIssued", True, False, str(invoices[1].invoice_id)),
        (
            "reports",
            "report.completed",
            "ReportCompleted",
            False,
            True,
            f"{record.report_id}/report.completed",
        ),
    ]
    assert rows[0].id < rows[1].id < rows[2].id
    assert {(r.report_id, r.attempts) for r in rows} == {(record.report_id, 0)}
    assert unstamped([InvoiceIssued.from_json(r.body) for r in rows[:2]]) == list(invoices)
    assert ReportCompleted.from_json(rows[2].body) == done
    assert (
        rows[0].body
        == (await store.invoices(invoice_id=invoices[0].invoice_id))[0].model_dump_json().encode()
    )


async def test_an_invoices_outbox_row_has_no_body_of_its_own(store: ReportStore) -> None:
    await publishing_report(store, accounts=2)
    outbox = schema.outbox

    async with store.engine.connect() as connection:
        bodies = (await connection.execute(select(outbox.c.body).order_by(outbox.c.id))).scalars().all()

    assert bodies[:2] == [None, None]
    assert bodies[2] is not None


async def test_finish_completed_moves_the_report_to_publishing_with_its_total_and_rate_card(
    store: ReportStore,
) -> None:
    record, _, done = await priced_report(store, accounts=2)
    card = {"currency": "EUR", "minor_units": 2, "items": {"vcpu": {"unit": "vCPU-hour"}}}

    await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=A, rate_card=card)

    finished = await get(store, record.report_id)
    assert (finished.status, finished.currency, finished.updated_at) == (
        ReportStatus.PUBLISHING,
        "EUR",
        minutes(10),
    )
    assert str(finished.total) == str(done.total) == "3.03"
    assert finished.rate_card == card
    assert (finished.owner, finished.lease_until) == (None, None)
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.PUBLISHING, minutes(10), "priced"
    )
    outbox = await store.outbox_status()
    # Staged at 9, issued at 10: the backlog waits for the relay from its issue on.
    assert (outbox.pending, outbox.staged, outbox.oldest_pending_at) == (3, 0, minutes(10))


async def test_finish_completed_by_a_coordinator_that_does_not_hold_the_report_writes_nothing(
    store: ReportStore,
) -> None:
    record, _, done = await priced_report(store, accounts=2)

    with pytest.raises(LeaseLost):
        await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=B)

    assert await status(store, record.report_id) is ReportStatus.PRICING
    assert (await store.outbox_status()).staged == 2
    assert await store.pending() == []
    assert await store.invoices(report_id=record.report_id) == []


async def test_finish_completed_outside_pricing_raises_and_issues_nothing(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.GATHERING)

    with pytest.raises(IllegalTransition, match="gathering → publishing is not allowed"):
        await store.finish_completed(record.report_id, completed(()), minutes(5), "too early")

    assert await store.pending() == []
    assert await status(store, record.report_id) is ReportStatus.GATHERING


async def test_finishing_a_report_twice_raises_and_writes_nothing(store: ReportStore) -> None:
    record, invoices, done = await publishing_report(store, accounts=2)
    history = await store.history(record.report_id)

    with pytest.raises(IntegrityError):
        await store.finish_completed(record.report_id, done, minutes(11), "again")

    assert len(await store.pending()) == 3
    assert unstamped(await store.invoices(report_id=record.report_id)) == list(invoices)
    assert await store.history(record.report_id) == history


async def test_finish_aborted_drops_staged_invoices_and_enqueues_report_aborted(store: ReportStore) -> None:
    record, _, _ = await priced_report(store, accounts=3)
    message = aborted()

    await store.finish_aborted(record.report_id, message, minutes(11), "unpriced: gpu-hours", owner=A)

    rows = await store.pending()
    assert rows == [
        OutboxRow(
            id=rows[0].id,
            report_id=record.report_id,
            message_id=f"{record.report_id}/report.aborted",
            exchange="reports",
            routing_key="report.aborted",
            message_type="ReportAborted",
            mandatory=False,
            body=message.to_json(),
            attempts=0,
            final=True,
        )
    ]
    assert ReportAborted.from_json(rows[0].body) == message
    assert await count(store, "invoices") == 0
    assert (await store.outbox_status()).staged == 0
    ended = await get(store, record.report_id)
    assert (ended.status, ended.owner) == (ReportStatus.ABORTED, None)
    assert (await store.history(record.report_id))[-1] == Transition(
        ReportStatus.ABORTED, minutes(11), "unpriced: gpu-hours"
    )


async def test_finish_aborted_by_a_coordinator_that_does_not_hold_the_report_writes_nothing(
    store: ReportStore,
) -> None:
    record, _, _ = await priced_report(store, accounts=2)

    with pytest.raises(LeaseLost):
        await store.finish_aborted(record.report_id, aborted(), minutes(11), "deadline", owner=B)

    assert await status(store, record.report_id) is ReportStatus.PRICING
    assert (await store.outbox_status()).staged == 2
    assert await store.pending() == []


# --- issued invoices -----------------------------------------------------------------------------


async def test_issued_invoices_round_trip_by_report_period_and_invoice_id(store: ReportStore) -> None:
    record, invoices, _ = await publishing_report(store, accounts=2)
    await priced_report(store, accounts=2, period=NOVEMBER)
    first, second = invoices

    by_report = await store.invoices(report_id=record.report_id)
    by_period = await store.invoices(period_id="2026-10")
    by_id = await store.invoices(invoice_id=second.invoice_id)

    assert by_report == by_period
    assert unstamped(by_report) == [first, second]
    assert unstamped(by_id) == [second]
    assert [i.number for i in by_report] == ["INV-2026-000001", "INV-2026-000002"]
    assert await store.invoices(period_id="2026-11") == []
    await store.mark_sent(await store.pending(), minutes(20))
    assert await status(store, record.report_id) is ReportStatus.COMPLETED
    assert await store.invoices(report_id=record.report_id) == by_report


async def test_current_invoices_maps_the_accounts_of_a_range_to_their_invoices(store: ReportStore) -> None:
    record, invoices, _ = await publishing_report(store, accounts=4)
    by_account = {i.account_id: i for i in invoices}
    period = record.period.period_id

    middle = await store.current_invoices(period, 2, after="acct-00001", upto="acct-00003")
    tail = await store.current_invoices(period, 2, after="acct-00003")
    by_account = {i.account_id: i for i in await store.invoices(report_id=record.report_id)}

    assert unstamped(list(by_account.values())) == list(invoices)
    assert middle == {account: by_account[account] for account in ("acct-00002", "acct-00003")}
    assert tail == {"acct-00004": by_account["acct-00004"]}
    assert await store.current_invoices(period, 2, after="acct-00004") == {}
    assert await store.current_invoices(period, 1) == {}  # nothing issued before revision 1
    assert await store.current_invoices(period, 2, account_id="acct-00002") == {
        "acct-00002": by_account["acct-00002"]
    }


# --- corrections: credit notes ------------------------------------------------------------------


async def correcting_report(store: ReportStore) -> tuple[tuple[InvoiceIssued, ...], list[CreditNoteIssued]]:
    """Revision 1 issued for two accounts; revision 2 priced with a credit note and a corrected
    invoice for each (staged, not finished)."""
    _, old, _ = await publishing_report(store, accounts=2)
    await store.mark_sent(await store.pending(), minutes(11))
    second = await report_at(store, ReportStatus.PRICING, revision=2)
    notes = [credit_note_for(i, report_id=second.report_id, revision=2) for i in old]
    corrected = tuple(
        invoice(i.account_id, "1.00", revision=2).model_copy(update={"supersedes": i.invoice_id}) for i in old
    )
    await store.stage_invoices(
        second.report_id,
        A,
        period_id="2026-10",
        revision=2,
        currency="EUR",
        invoices=staged(corrected),
        credit_notes=[
            StagedCreditNote(
                n.credit_note_id,
                n.account_id,
                n.credits,
                n.currency,
                str(n.total),
                n.model_dump_json(exclude=DRAFT_CREDIT_NOTE_FIELDS),
            )
            for n in notes
        ],
        at=minutes(20),
    )
    return corrected, notes


async def test_a_credit_note_is_relayed_before_the_invoice_correcting_its_account(store: ReportStore) -> None:
    corrected, notes = await correcting_report(store)
    second = corrected[0].report_id
    await store.finish_completed(second, completed(corrected, revision=2), minutes(21), "priced", owner=A)

    rows = await store.pending()

    assert [(row.routing_key, row.message_id) for row in rows] == [
        ("credit_note.issued", str(notes[0].credit_note_id)),
        ("invoice.corrected", str(corrected[0].invoice_id)),
        ("credit_note.issued", str(notes[1].credit_note_id)),
        ("invoice.corrected", str(corrected[1].invoice_id)),
        ("report.completed", f"{second}/report.completed"),
    ]
    assert [row.message_type for row in rows[:2]] == ["CreditNoteIssued", "InvoiceIssued"]
    assert unstamped([CreditNoteIssued.from_json(rows[0].body)]) == [notes[0]]
    assert unstamped([InvoiceIssued.from_json(rows[1].body)]) == [corrected[0]]
    issued = await store.credit_notes(report_id=second)
    assert unstamped(issued) == notes
    assert [note.number for note in issued] == ["CN-2026-000001", "CN-2026-000002"]
    assert {note.issued_at for note in issued} == {minutes(21)}
    assert await store.credit_notes(credits=notes[1].credits) == [issued[1]]
    assert await store.credit_notes(credit_note_id=notes[0].credit_note_id) == [issued[0]]
    # The corrections continue the invoice series that revision 1 started.
    assert [i.number for i in await store.invoices(report_id=second)] == [
        "INV-2026-000003",
        "INV-2026-000004",
    ]


async def test_credit_notes_are_invisible_until_their_report_is_priced_and_dropped_with_its_batches(
    store: ReportStore,
) -> None:
    corrected, _ = await correcting_report(store)

    assert await store.credit_notes(period_id="2026-10") == []
    await store.clear_staged(corrected[0].report_id, A)
    assert await count(store, "credit_notes") == 0
    assert await store.pending() == []
