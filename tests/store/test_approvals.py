"""Drafts, approval and numbering in the store: a draft is stored whole and sends nothing; approval
numbers and dates its documents in one transaction, gapless and never twice (two coordinators on
one PostgreSQL included); rejection aborts it and consumes no number. Both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import pytest

from accounting.core.lifecycle import ReportStatus
from accounting.core.numbering import IssueStamp, Numbering
from accounting.store.repository import DraftNotFound, ReportRecord, ReportStore
from contracts import AbortCode, AbortReason, InvoiceIssued, Period, ReportAborted
from tests.store.support import (
    NOVEMBER,
    OCTOBER,
    A,
    Backend,
    get,
    minutes,
    priced_report,
    publishing_report,
    unstamped,
)

NUMBERING = Numbering(payment_terms=timedelta(days=14))


async def draft_report(
    store: ReportStore, accounts: int = 3, period: Period = OCTOBER
) -> tuple[ReportRecord, tuple[InvoiceIssued, ...]]:
    record, invoices, done = await priced_report(store, accounts=accounts, period=period)
    await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=A, numbering=None)
    return record, invoices


def rejection(record_id: UUID, period: Period) -> ReportAborted:
    return ReportAborted(
        report_id=record_id,
        revision=1,
        period=period,
        reasons=(AbortReason(code=AbortCode.REJECTED, message="rejected by alice: storage looks low"),),
    )


async def test_a_draft_is_stored_whole_but_nothing_is_numbered_visible_or_sent(store: ReportStore) -> None:
    record, invoices = await draft_report(store)

    draft = await get(store, record.report_id)
    assert draft.status is ReportStatus.DRAFT
    assert (draft.owner, draft.lease_until) == (None, None)
    assert await store.pending() == []
    assert (await store.outbox_status()).staged == len(invoices) + 1  # and ReportCompleted, waiting
    assert await store.invoices(report_id=record.report_id) == []
    as_drafted = await store.invoices(report_id=record.report_id, drafts=True)
    assert as_drafted == list(invoices)
    assert {i.number for i in as_drafted} == {None}
    assert await store.drafts() == [record.report_id]
    assert await store.approvals(record.report_id) == []


async def test_approval_numbers_and_dates_every_document_in_account_order_and_releases_them(
    store: ReportStore,
) -> None:
    record, invoices = await draft_report(store)

    issued = await store.approve(record.report_id, "alice", minutes(30), NUMBERING, "checked the diff")

    assert (issued.invoices, issued.credit_notes) == (3, 0)
    assert issued.ranges == (("INV-2026-000001", "INV-2026-000003"),)
    numbered = await store.invoices(report_id=record.report_id)
    assert [i.account_id for i in numbered] == [i.account_id for i in invoices]
    assert [i.number for i in numbered] == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    assert {(i.issued_at, i.due_at) for i in numbered} == {(minutes(30), minutes(30) + timedelta(days=14))}
    assert unstamped(numbered) == list(invoices)
    assert (await get(store, record.report_id)).status is ReportStatus.PUBLISHING
    rows = await store.pending()
    assert [row.message_id for row in rows] == [
        *(str(i.invoice_id) for i in invoices),
        f"{record.report_id}/report.completed",
    ]
    assert [InvoiceIssued.from_json(row.body) for row in rows[:3]] == numbered
    decision = (await store.approvals(record.report_id))[0]
    assert (decision.decision, decision.decided_by, decision.decided_at, decision.reason) == (
        "approved",
        "alice",
        minutes(30),
        "checked the diff",
    )
    history = await store.history(record.report_id)
    assert [t.status for t in history[-2:]] == [ReportStatus.DRAFT, ReportStatus.PUBLISHING]
    assert history[-1].reason == "approved by alice: checked the diff"


async def test_a_draft_is_decided_once(store: ReportStore) -> None:
    record, _ = await draft_report(store)
    await store.approve(record.report_id, "alice", minutes(30), NUMBERING)

    with pytest.raises(DraftNotFound, match="it is publishing"):
        await store.approve(record.report_id, "bob", minutes(31), NUMBERING)
    with pytest.raises(DraftNotFound, match="it is publishing"):
        await store.reject(
            record.report_id, "bob", minutes(31), "late", rejection(record.report_id, record.period)
        )

    assert len(await store.approvals(record.report_id)) == 1
    assert [i.number for i in await store.invoices(report_id=record.report_id)][-1] == "INV-2026-000003"


async def test_rejection_aborts_the_draft_and_consumes_no_number(store: ReportStore) -> None:
    record, _ = await draft_report(store)

    await store.reject(
        record.report_id,
        "alice",
        minutes(30),
        "storage looks low",
        rejection(record.report_id, record.period),
    )

    assert (await get(store, record.report_id)).status is ReportStatus.ABORTED
    assert await store.invoices(report_id=record.report_id, drafts=True) == []
    rows = await store.pending()
    assert [(row.routing_key, row.message_type) for row in rows] == [("report.aborted", "ReportAborted")]
    assert ReportAborted.from_json(rows[0].body).reasons[0].code is AbortCode.REJECTED
    decision = (await store.approvals(record.report_id))[0]
    assert (decision.decision, decision.decided_by, decision.reason) == (
        "rejected",
        "alice",
        "storage looks low",
    )
    # The next report issued starts the series at 1: the rejected draft took none.
    other, _, _ = await publishing_report(store, accounts=2, period=NOVEMBER)
    assert [i.number for i in await store.invoices(report_id=other.report_id)] == [
        "INV-2026-000001",
        "INV-2026-000002",
    ]


async def test_an_issue_that_fails_midway_gives_its_numbers_back(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, _ = await draft_report(store)
    stamped = IssueStamp.invoice_body
    calls = 0

    def failing(self: IssueStamp, draft: str, number: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the store went away mid-issue")
        return stamped(self, draft, number)

    monkeypatch.setattr(IssueStamp, "invoice_body", failing)
    with pytest.raises(RuntimeError, match="mid-issue"):
        await store.approve(record.report_id, "alice", minutes(30), NUMBERING)
    monkeypatch.setattr(IssueStamp, "invoice_body", stamped)

    assert (await get(store, record.report_id)).status is ReportStatus.DRAFT
    assert await store.approvals(record.report_id) == []
    assert await store.pending() == []
    issued = await store.approve(record.report_id, "alice", minutes(31), NUMBERING)
    assert issued.ranges == (("INV-2026-000001", "INV-2026-000003"),)


async def test_a_series_starts_again_each_year_and_previews_have_their_own(store: ReportStore) -> None:
    record, _ = await draft_report(store, accounts=2)
    new_year = minutes(0).replace(year=2027, month=1, day=1, hour=0, minute=0)
    issued = await store.approve(record.report_id, "alice", new_year, NUMBERING)
    preview_record, _ = await draft_report(store, accounts=1, period=NOVEMBER)
    preview = await store.approve(preview_record.report_id, "alice", new_year, NUMBERING.for_preview())

    assert issued.ranges == (("INV-2027-000001", "INV-2027-000002"),)
    assert preview.ranges == (("PREVIEW-INV-2027-000001", "PREVIEW-INV-2027-000001"),)


async def test_two_coordinators_issuing_at_once_never_share_or_skip_a_number(
    backend: Backend, store: ReportStore
) -> None:
    """Two stores (two engines, as two coordinators have) approve two drafts at the same moment:
    on PostgreSQL the counter row's lock orders them, on SQLite the database lock does."""
    first, _ = await draft_report(store, accounts=40)
    second, _ = await draft_report(store, accounts=30, period=NOVEMBER)
    other = await backend.open()
    try:
        results = await asyncio.gather(
            store.approve(first.report_id, "alice", minutes(30), NUMBERING),
            other.approve(second.report_id, "bob", minutes(30), NUMBERING),
        )
    finally:
        await other.close()

    numbers = [
        str(i.number) for record in (first, second) for i in await store.invoices(report_id=record.report_id)
    ]
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, 71)]
    assert sorted(result.invoices for result in results) == [30, 40]
