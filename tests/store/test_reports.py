"""Reports, their transitions and the leases that fence every builder's write (both backends)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from sqlalchemy.exc import StatementError

from accounting.core.lifecycle import IllegalTransition, ReportStatus, Transition
from accounting.store.repository import LeaseLost, ReportExists, ReportRecord, ReportStore
from contracts import Period, report_id
from tests.store.support import (
    ACTIVE,
    NOVEMBER,
    OCTOBER,
    T0,
    A,
    B,
    Backend,
    aborted,
    aborted_report,
    advance,
    get,
    minutes,
    new_report,
    publishing_report,
    queued,
    report_at,
    status,
)


def is_utc(moment: datetime | None) -> bool:
    return moment is not None and moment.tzinfo is UTC


# --- creating and reading reports ----------------------------------------------------------------


async def test_create_report_round_trips_every_field_with_utc_times(store: ReportStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    rid, carried, superseded = report_id("2026-10", 2), uuid4(), report_id("2026-10", 1)
    created = await store.create_report(
        report_id=rid,
        period=OCTOBER,
        revision=2,
        services=("compute", "storage", "network"),
        requested=("storage",),
        at=datetime(2026, 11, 1, 2, 5, 0, 123456, tzinfo=plus_two),
        reason="replay",
        owner=A,
        lease_until=datetime(2026, 11, 1, 2, 35, 0, 999999, tzinfo=plus_two),
        carried_from=carried,
        supersedes=superseded,
    )

    assert created == ReportRecord(
        report_id=rid,
        period=OCTOBER,
        revision=2,
        status=ReportStatus.PENDING,
        services=("compute", "storage", "network"),
        requested=("storage",),
        carried_from=carried,
        supersedes=superseded,
        currency=None,
        total=None,
        rate_card=None,
        owner=A,
        lease_until=datetime(2026, 11, 1, 0, 35, 0, 999999, tzinfo=UTC),
        created_at=datetime(2026, 11, 1, 0, 5, 0, 123456, tzinfo=UTC),
        updated_at=datetime(2026, 11, 1, 0, 5, 0, 123456, tzinfo=UTC),
    )
    assert await store.get(rid) == created
    assert await store.latest("2026-10") == created
    moments = [created.period.start, created.period.end, created.lease_until, created.created_at]
    assert all(is_utc(moment) for moment in [*moments, created.updated_at])


async def test_get_and_latest_of_unknown_reports_are_none(store: ReportStore) -> None:
    assert await store.get(uuid4()) is None
    assert await store.latest("2026-10") is None
    assert await store.latest_completed("2026-10") is None


async def test_a_naive_datetime_is_refused(store: ReportStore) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await new_report(store, at=datetime(2026, 11, 1))

    assert await store.list_reports() == []


async def test_a_second_report_for_the_same_period_and_revision_raises_report_exists(
    store: ReportStore,
) -> None:
    first = await new_report(store)

    with pytest.raises(ReportExists, match="2026-10 already has revision 1"):
        await store.create_report(
            report_id=uuid4(),
            period=OCTOBER,
            revision=1,
            services=("compute",),
            requested=("compute",),
            at=minutes(1),
            reason="duplicate PeriodClosed",
        )

    assert await store.list_reports() == [first]
    assert await store.history(first.report_id) == [
        Transition(ReportStatus.PENDING, T0, "PeriodClosed from scheduler")
    ]


async def test_list_reports_orders_by_period_then_revision_and_latest_is_the_newest_revision(
    store: ReportStore,
) -> None:
    await new_report(store, period=NOVEMBER, revision=1)
    await new_report(store, period=OCTOBER, revision=2)
    await new_report(store, period=NOVEMBER, revision=2)
    await new_report(store, period=OCTOBER, revision=1)

    listed = [(r.period.period_id, r.revision) for r in await store.list_reports()]
    october = [(r.period.period_id, r.revision) for r in await store.list_reports("2026-10")]
    latest = await store.latest("2026-10")

    assert listed == [("2026-10", 1), ("2026-10", 2), ("2026-11", 1), ("2026-11", 2)]
    assert october == [("2026-10", 1), ("2026-10", 2)]
    assert latest is not None and latest.revision == 2


async def test_ten_concurrent_creates_of_one_revision_admit_exactly_one(
    store: ReportStore, backend: Backend
) -> None:
    async def create(n: int) -> ReportRecord:
        return await store.create_report(
            report_id=uuid4(),
            period=OCTOBER,
            revision=1,
            services=("compute",),
            requested=("compute",),
            at=minutes(n),
            reason=f"PeriodClosed #{n}",
        )

    async with queued(store, backend, "reports", waiters=10):
        creating = [asyncio.create_task(create(n)) for n in range(10)]
    outcomes = await asyncio.gather(*creating, return_exceptions=True)

    winners = [o for o in outcomes if isinstance(o, ReportRecord)]
    losers = [o for o in outcomes if isinstance(o, ReportExists)]
    assert (len(winners), len(losers)) == (1, 9)
    assert await store.list_reports() == winners
    assert len(await store.history(winners[0].report_id)) == 1


# --- transitions ---------------------------------------------------------------------------------


async def test_allowed_moves_are_recorded_in_order_with_reasons_and_utc_times(store: ReportStore) -> None:
    record = await new_report(store)

    await store.move(record.report_id, ReportStatus.GATHERING, minutes(1), "requests sent", owner=A)
    await store.move(record.report_id, ReportStatus.NORMALIZING, minutes(2), "every service replied")
    await store.move(record.report_id, ReportStatus.PRICING, minutes(3), "normalized 42 records", owner=A)

    history = await store.history(record.report_id)
    assert history == [
        Transition(ReportStatus.PENDING, T0, "PeriodClosed from scheduler"),
        Transition(ReportStatus.GATHERING, minutes(1), "requests sent"),
        Transition(ReportStatus.NORMALIZING, minutes(2), "every service replied"),
        Transition(ReportStatus.PRICING, minutes(3), "normalized 42 records"),
    ]
    assert all(is_utc(t.at) for t in history)
    moved = await get(store, record.report_id)
    assert (moved.status, moved.updated_at, moved.owner) == (ReportStatus.PRICING, minutes(3), A)


async def test_a_resumed_report_may_go_back_to_gathering(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.PRICING)

    await store.move(record.report_id, ReportStatus.GATHERING, minutes(5), "resumed", owner=A)

    assert await status(store, record.report_id) is ReportStatus.GATHERING


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (ReportStatus.PENDING, ReportStatus.COMPLETED),
        (ReportStatus.PENDING, ReportStatus.NORMALIZING),
        (ReportStatus.GATHERING, ReportStatus.PUBLISHING),
        (ReportStatus.NORMALIZING, ReportStatus.COMPLETED),
    ],
    ids=lambda s: str(s),
)
async def test_an_illegal_move_raises_and_records_nothing(
    store: ReportStore, start: ReportStatus, target: ReportStatus
) -> None:
    record = await report_at(store, start)
    before, history = await get(store, record.report_id), await store.history(record.report_id)

    with pytest.raises(IllegalTransition, match=f"{start} → {target} is not allowed"):
        await store.move(record.report_id, target, minutes(10), "skip ahead", owner=A)

    assert await get(store, record.report_id) == before
    assert await store.history(record.report_id) == history


async def test_no_move_leaves_a_finished_report(store: ReportStore) -> None:
    record = await aborted_report(store)

    with pytest.raises(IllegalTransition, match="aborted → gathering is not allowed"):
        await store.move(record.report_id, ReportStatus.GATHERING, minutes(10))

    assert await status(store, record.report_id) is ReportStatus.ABORTED


async def test_moving_an_unknown_report_raises_lookup_error(store: ReportStore) -> None:
    with pytest.raises(LookupError, match="no report"):
        await store.move(uuid4(), ReportStatus.GATHERING, minutes(1))


async def test_a_move_within_the_build_sets_the_lease_and_leaving_it_clears_the_owner(
    store: ReportStore,
) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(30))

    await store.move(record.report_id, ReportStatus.GATHERING, minutes(1), owner=A, lease_until=minutes(40))
    gathering = await get(store, record.report_id)
    await store.move(record.report_id, ReportStatus.ABORTED, minutes(2), "deadline", owner=A)
    ended = await get(store, record.report_id)

    assert (gathering.owner, gathering.lease_until) == (A, minutes(40))
    assert (ended.owner, ended.lease_until) == (None, None)
    assert not ended.collecting(minutes(2))


# --- fencing: only the coordinator holding a report moves it -------------------------------------


async def test_a_move_by_a_coordinator_that_does_not_hold_the_report_raises_lease_lost(
    store: ReportStore,
) -> None:
    record = await report_at(store, ReportStatus.GATHERING)
    before, history = await get(store, record.report_id), await store.history(record.report_id)

    with pytest.raises(LeaseLost, match=f"{B} no longer builds it"):
        await store.move(record.report_id, ReportStatus.NORMALIZING, minutes(5), "replied", owner=B)

    assert await get(store, record.report_id) == before
    assert await store.history(record.report_id) == history


async def test_a_coordinator_whose_report_was_taken_over_can_no_longer_move_it(store: ReportStore) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(1))
    await store.move(record.report_id, ReportStatus.GATHERING, minutes(0.5), owner=A)
    [taken] = await store.claim_abandoned(B, minutes(2), minutes(32))
    history = await store.history(record.report_id)

    with pytest.raises(LeaseLost, match=f"held by {B}"):
        await store.move(record.report_id, ReportStatus.NORMALIZING, minutes(3), owner=A)
    with pytest.raises(LeaseLost):
        await store.finish_aborted(record.report_id, aborted(), minutes(3), "deadline", owner=A)

    assert await get(store, record.report_id) == taken
    assert await store.history(record.report_id) == history
    assert await store.pending() == []


async def test_a_released_report_cannot_be_moved_by_its_former_owner(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.GATHERING)
    await store.release(record.report_id, minutes(4), owner=A)

    with pytest.raises(LeaseLost, match="held by nobody"):
        await store.move(record.report_id, ReportStatus.NORMALIZING, minutes(5), owner=A)

    assert await status(store, record.report_id) is ReportStatus.GATHERING


# --- leases --------------------------------------------------------------------------------------


async def test_renew_lease_extends_the_holders_lease_only(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.GATHERING)

    assert await store.renew_lease(record.report_id, A, minutes(90)) is True
    assert await store.renew_lease(record.report_id, B, minutes(120)) is False
    assert await store.renew_lease(uuid4(), A, minutes(120)) is False

    renewed = await get(store, record.report_id)
    assert (renewed.owner, renewed.lease_until) == (A, minutes(90))


async def test_renew_lease_is_false_once_the_report_left_the_build(store: ReportStore) -> None:
    record, _, _ = await publishing_report(store)

    assert await store.renew_lease(record.report_id, A, minutes(90)) is False
    published = await get(store, record.report_id)
    assert (published.owner, published.lease_until) == (None, None)


@pytest.mark.parametrize("active", ACTIVE, ids=[s.value for s in ACTIVE])
async def test_claim_takes_an_active_report_whose_lease_expired(
    store: ReportStore, active: ReportStatus
) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(30))
    await advance(store, record.report_id, active, owner=A)

    claimed = await store.claim_abandoned(B, minutes(31), minutes(61))

    assert [(r.report_id, r.status, r.owner, r.lease_until, r.updated_at) for r in claimed] == [
        (record.report_id, active, B, minutes(61), minutes(31))
    ]
    assert await store.get(record.report_id) == claimed[0]


async def test_claim_takes_an_active_report_without_an_owner(store: ReportStore) -> None:
    record = await new_report(store, owner=None, lease_until=None)

    claimed = await store.claim_abandoned(B, minutes(1), minutes(31))

    assert [(r.report_id, r.owner, r.lease_until) for r in claimed] == [(record.report_id, B, minutes(31))]


async def test_claim_leaves_a_report_whose_lease_is_still_valid(store: ReportStore) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(30))

    assert await store.claim_abandoned(B, minutes(29), minutes(59)) == []
    assert await store.get(record.report_id) == record


async def test_claim_never_takes_an_excluded_report(store: ReportStore) -> None:
    mine = await new_report(store, period=OCTOBER, owner=A, lease_until=minutes(1))
    other = await new_report(store, period=NOVEMBER, owner="coordinator-dead", lease_until=minutes(1))

    claimed = await store.claim_abandoned(A, minutes(5), minutes(35), exclude={mine.report_id})

    assert [r.report_id for r in claimed] == [other.report_id]
    assert await store.get(mine.report_id) == mine


async def test_claim_of_one_period_leaves_the_others(store: ReportStore) -> None:
    await new_report(store, period=OCTOBER, owner=None)
    november = await new_report(store, period=NOVEMBER, owner=None)

    claimed = await store.claim_abandoned(B, minutes(5), minutes(35), period_id="2026-11")

    assert [r.report_id for r in claimed] == [november.report_id]


async def test_claim_leaves_publishing_completed_and_aborted_reports(store: ReportStore) -> None:
    await publishing_report(store, period=OCTOBER)
    done, _, _ = await publishing_report(store, period=NOVEMBER)
    await store.mark_sent([r for r in await store.pending() if r.report_id == done.report_id], minutes(20))
    december = Period.month("2026-12")
    collecting = await report_at(store, ReportStatus.GATHERING, period=december)
    await store.finish_aborted(
        collecting.report_id,
        aborted(period=december),
        minutes(3),
        "deadline",
        owner=A,
        collect_until=minutes(5),
    )
    before = await store.list_reports()

    assert await store.claim_abandoned(B, minutes(600), minutes(630)) == []
    assert [r.status for r in before] == [
        ReportStatus.PUBLISHING,
        ReportStatus.COMPLETED,
        ReportStatus.ABORTED,
    ]
    assert await store.list_reports() == before


async def test_two_concurrent_claimers_take_each_report_at_most_once(
    store: ReportStore, backend: Backend
) -> None:
    periods = [Period.month(f"2026-{month:02d}") for month in range(1, 7)]
    for period in periods:
        await new_report(store, period=period, owner="coordinator-dead", lease_until=minutes(1))

    async with queued(store, backend, "reports", waiters=2):
        claiming = [
            asyncio.create_task(store.claim_abandoned(owner, minutes(5), minutes(35)))
            for owner in ("coordinator-b", "coordinator-c")
        ]
    by_b, by_c = await asyncio.gather(*claiming)

    ids_b, ids_c = {r.report_id for r in by_b}, {r.report_id for r in by_c}
    assert ids_b.isdisjoint(ids_c)
    assert ids_b | ids_c == {report_id(period.period_id, 1) for period in periods}
    owners = {r.report_id: r.owner for r in await store.list_reports()}
    assert all(owners[rid] == "coordinator-b" for rid in ids_b)
    assert all(owners[rid] == "coordinator-c" for rid in ids_c)


def overtaken_claimer(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch, rival: str, now: datetime, lease_until: datetime
) -> ReportStore:
    """A second store on the same database whose claim is overtaken by ``rival``'s claim.

    Between reading the active reports and trying to take them, ``rival`` claims them all: the
    interleaving two coordinators hit when they look for abandoned reports at the same time.
    """
    slow = ReportStore(store.engine)
    read_active = slow._active

    async def read_then_rival_claims(period_id: str | None = None) -> list[ReportRecord]:
        records = await read_active(period_id)
        await store.claim_abandoned(rival, now, lease_until)
        return records

    monkeypatch.setattr(slow, "_active", read_then_rival_claims)
    return slow


async def test_a_claim_overtaken_by_another_claim_takes_nothing(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await new_report(store, owner="coordinator-dead", lease_until=minutes(1))
    slow = overtaken_claimer(store, monkeypatch, B, minutes(5), minutes(35))

    assert await slow.claim_abandoned("coordinator-c", minutes(5), minutes(35)) == []
    claimed = await get(store, record.report_id)
    assert (claimed.owner, claimed.lease_until) == (B, minutes(35))


async def test_a_claim_overtaken_at_the_instant_of_the_last_update_takes_nothing(
    store: ReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await new_report(store, owner=None, lease_until=None, at=minutes(5))
    slow = overtaken_claimer(store, monkeypatch, B, minutes(5), minutes(35))

    assert await slow.claim_abandoned("coordinator-c", minutes(5), minutes(35)) == []
    assert (await get(store, record.report_id)).owner == B


async def test_release_lets_the_next_claim_take_the_report_at_once(store: ReportStore) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(30))

    await store.release(record.report_id, minutes(1))
    released = await get(store, record.report_id)
    claimed = await store.claim_abandoned(B, minutes(2), minutes(32))

    assert (released.owner, released.lease_until, released.updated_at) == (None, None, minutes(1))
    assert [(r.report_id, r.owner) for r in claimed] == [(record.report_id, B)]


async def test_release_by_an_owner_that_does_not_hold_the_report_changes_nothing(
    store: ReportStore,
) -> None:
    record = await new_report(store, owner=A, lease_until=minutes(30))

    await store.release(record.report_id, minutes(1), owner=B)

    assert await store.get(record.report_id) == record


# --- collecting after an abort ---------------------------------------------------------------------


async def test_an_abort_with_collect_until_keeps_the_lease_until_released(store: ReportStore) -> None:
    record = await report_at(store, ReportStatus.GATHERING)

    await store.finish_aborted(
        record.report_id, aborted(), minutes(3), "storage: deadline", owner=A, collect_until=minutes(8)
    )
    collecting = await get(store, record.report_id)
    renewed = await store.renew_lease(record.report_id, A, minutes(9))
    stolen = await store.renew_lease(record.report_id, B, minutes(9))
    await store.release(record.report_id, minutes(4), owner=A)
    released = await get(store, record.report_id)

    assert (collecting.status, collecting.owner, collecting.lease_until) == (
        ReportStatus.ABORTED,
        A,
        minutes(8),
    )
    assert collecting.collecting(minutes(7)) is True
    assert collecting.collecting(minutes(8)) is False
    assert (renewed, stolen) == (True, False)
    assert (released.owner, released.lease_until) == (None, None)
    assert released.collecting(minutes(4)) is False


async def test_an_abort_without_collect_until_drops_the_lease(store: ReportStore) -> None:
    record = await aborted_report(store)

    ended = await get(store, record.report_id)

    assert (ended.owner, ended.lease_until, ended.collecting(minutes(3))) == (None, None, False)
    assert await store.renew_lease(record.report_id, A, minutes(9)) is False


# --- which revision counts -----------------------------------------------------------------------


async def test_latest_completed_ignores_an_aborted_later_revision(store: ReportStore) -> None:
    first, _, _ = await publishing_report(store, revision=1)
    publishing = await store.latest_completed("2026-10")
    await store.mark_sent(await store.pending(), minutes(20))
    second = await new_report(store, revision=2, at=minutes(30))
    await store.finish_aborted(second.report_id, aborted(revision=2), minutes(31), "deadline")

    best = await store.latest_completed("2026-10")
    newest = await store.latest("2026-10")

    assert publishing is not None and publishing.status is ReportStatus.PUBLISHING
    assert best is not None and newest is not None
    assert (best.report_id, best.status) == (first.report_id, ReportStatus.COMPLETED)
    assert (newest.report_id, newest.status) == (second.report_id, ReportStatus.ABORTED)


async def test_latest_completed_is_none_when_every_revision_aborted(store: ReportStore) -> None:
    await aborted_report(store)

    assert await store.latest_completed("2026-10") is None
