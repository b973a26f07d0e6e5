"""A write longer than the lease does not lose it (both backends; issue 16).

The keeper's own renewal cannot commit while the builder's write holds the report's row
(PostgreSQL) or the database (SQLite). A window that takes longer than the lease therefore
commits with the lease run out unless the write renews it as its last statement; a coordinator
waiting to take the report over then wins. These tests make the store slow on purpose and measure
both: without the renewal at commit the report is taken over the moment the window commits, with
it the builder keeps the report and nothing is logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from accounting.core.lifecycle import ReportStatus
from accounting.infra.clock import utc_now
from accounting.service.leases import LeaseKeeper
from accounting.store import schema
from accounting.store.engine import Renewal
from accounting.store.repository import ReportStore
from tests.store.support import A, B, advance, get, invoice, new_report, slow_inserts, staged

LEASE = timedelta(seconds=0.6)
SLOW_WINDOW = 1.5
"""Seconds one window of invoices takes to store: two and a half leases."""


@pytest.fixture
def slow_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window of invoices spends ``SLOW_WINDOW`` seconds inside its transaction."""
    slow_inserts(monkeypatch, SLOW_WINDOW, schema.outbox)


async def pricing_report(store: ReportStore) -> UUID:
    """A report of ``A`` in PRICING whose lease runs out ``LEASE`` from now."""
    record = await new_report(store, owner=A, lease_until=utc_now() + LEASE)
    await advance(store, record.report_id, ReportStatus.PRICING, owner=A)
    return record.report_id


async def stage_window(store: ReportStore, report_id: UUID, renewal: Renewal | None, number: int = 0) -> None:
    window = [invoice(f"acct-{number}-{n}", "1.00") for n in range(3)]
    await store.stage_invoices(
        report_id,
        A,
        period_id="2026-10",
        revision=1,
        currency="EUR",
        invoices=staged(window),
        at=utc_now(),
        renewal=renewal,
    )


async def take_over_after_the_lease_ran_out(store: ReportStore) -> list[Any]:
    """Another coordinator looks for abandoned reports once the lease taken before the window has
    run out; it waits for the window's transaction and decides when it commits."""
    await asyncio.sleep(LEASE.total_seconds() * 1.5)
    now = utc_now()
    return await store.claim_abandoned(B, now, now + LEASE)


@pytest.mark.usefixtures("slow_windows")
async def test_without_renewing_at_commit_a_long_window_loses_the_lease_as_it_commits(
    store: ReportStore,
) -> None:
    report_id = await pricing_report(store)
    window = asyncio.create_task(stage_window(store, report_id, renewal=None))
    taken = await take_over_after_the_lease_ran_out(store)
    await window  # its fence ran first: the window itself is stored

    assert [record.owner for record in taken] == [B]
    assert (await get(store, report_id)).owner == B


@pytest.mark.usefixtures("slow_windows")
async def test_a_window_longer_than_the_lease_renews_it_as_it_commits(
    store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    report_id = await pricing_report(store)
    with caplog.at_level(logging.DEBUG, logger="reckon.lease"):
        async with LeaseKeeper(store, report_id, A, LEASE, utc_now) as keeper:
            window = asyncio.create_task(stage_window(store, report_id, keeper.renewal))
            taken = await take_over_after_the_lease_ran_out(store)
            await window
            committed = utc_now()

    held = await get(store, report_id)
    assert taken == []
    assert held.owner == A and held.lease_until is not None and held.lease_until > committed
    assert keeper.lost is False and keeper.renewals["write"] == 1
    assert not caplog.records, caplog.text


async def test_the_keeper_does_not_renew_what_a_write_just_renewed(store: ReportStore) -> None:
    report_id = await pricing_report(store)
    async with LeaseKeeper(store, report_id, A, LEASE, utc_now) as keeper:
        for number in range(6):  # a window every sixth of the lease: the keeper's ticks never fall due
            await stage_window(store, report_id, keeper.renewal, number)
            await asyncio.sleep(LEASE.total_seconds() / 6)
        by_writes = dict(keeper.renewals)
        await asyncio.sleep(LEASE.total_seconds() / 3 * 1.5)  # no writes: the keeper takes over

    assert by_writes == {"keeper": 0, "write": 6}
    assert keeper.renewals["keeper"] >= 1


async def test_a_stopped_keeper_renews_nothing_more(store: ReportStore) -> None:
    report_id = await pricing_report(store)
    async with LeaseKeeper(store, report_id, A, LEASE, utc_now) as keeper:
        await keeper.stop()
        before = (await get(store, report_id)).lease_until
        await asyncio.sleep(LEASE.total_seconds())
        after = (await get(store, report_id)).lease_until

    assert keeper.renewals == {"keeper": 0, "write": 0}
    assert after == before
