"""The lease keeper says truthfully why a renewal matched nothing (both backends): a report its
builder finished between two ticks is not an error (the false "lease lost" at 1,000,000 accounts,
issue 16), a take-over is, and names the coordinator that holds the report now."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest

from accounting.core.lifecycle import ReportStatus
from accounting.service.leases import LeaseKeeper
from accounting.store.repository import ReportStore
from tests.store.support import A, B, minutes, priced_report, report_at

TICK = timedelta(seconds=0.3)
"""The keeper renews every third of the lease: every 0.1 s here."""


def clock() -> datetime:
    return minutes(5)


async def renewed_once_more(keeper: LeaseKeeper) -> None:
    await asyncio.sleep(TICK.total_seconds() / 3 * 2.5)


async def test_a_report_finished_between_two_ticks_is_not_a_lost_lease(
    store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    record, _, done = await priced_report(store)
    with caplog.at_level(logging.DEBUG, logger="reckon.lease"):
        async with LeaseKeeper(store, record.report_id, A, TICK, clock) as keeper:
            # The builder's last write: the report leaves the statuses a lease is held in.
            await store.finish_completed(record.report_id, done, minutes(10), "priced", owner=A)
            await renewed_once_more(keeper)

    assert keeper.lost is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert any("no lease to renew, the report is publishing" in r.getMessage() for r in caplog.records)


async def test_a_report_taken_over_is_a_lost_lease_naming_its_new_holder(
    store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    record = await report_at(store, ReportStatus.GATHERING)
    with caplog.at_level(logging.INFO, logger="reckon.lease"):
        async with LeaseKeeper(store, record.report_id, A, TICK, clock) as keeper:
            await store.release(record.report_id, minutes(6), owner=A)
            [taken] = await store.claim_abandoned(B, minutes(7), minutes(60))
            assert taken.owner == B
            await renewed_once_more(keeper)

    assert keeper.lost is True
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"coordinator {B} holds it now" in error and "status gathering" in error


async def test_the_holder_keeps_renewing_while_the_build_runs(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.GATHERING)
    later = [minutes(5)]

    def moving_clock() -> datetime:
        return later[0]

    async with LeaseKeeper(store, record.report_id, A, TICK, moving_clock) as keeper:
        later[0] = minutes(30)
        await renewed_once_more(keeper)

    assert keeper.lost is False
    held = await store.get(record.report_id)
    assert held is not None and held.owner == A
    assert held.lease_until is not None and held.lease_until >= minutes(30)
