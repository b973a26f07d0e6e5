"""The compute service's streaming path: instance by instance, exactly compute_usage's records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Period, UsageRecord
from workers.compute.seed import seed
from workers.compute.service import ComputeService
from workers.compute.store import ComputeStore
from workers.compute.usage import InstanceEvent, compute_usage, stream_compute_usage

OCTOBER = Period.month("2026-10")
US = timedelta(microseconds=1)
LENGTH_US = int(OCTOBER.seconds) * 1_000_000

# Offsets from the period start, in microseconds: around both boundaries, whole and odd values.
offsets = st.one_of(
    st.integers(min_value=-40 * 86_400 * 10**6, max_value=LENGTH_US + 40 * 86_400 * 10**6),
    st.sampled_from([0, 1, -1, LENGTH_US, LENGTH_US - 1, LENGTH_US + 1, 86_400 * 10**6, 1_500_000]),
    st.integers(min_value=-10, max_value=10).map(lambda days: days * 86_400 * 10**6),
)
sizes = st.tuples(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=2**20))


@st.composite
def instance_history(draw: st.DrawFn, instance_id: str) -> list[InstanceEvent]:
    account = draw(st.sampled_from(["acct-0001", "acct-0002", "acct-0003"]))
    times = sorted(draw(st.sets(offsets, min_size=1, max_size=6)))
    deleted = len(times) > 1 and draw(st.booleans())
    events: list[InstanceEvent] = []
    for index, offset in enumerate(times):
        at = OCTOBER.start + offset * US
        if index == 0:
            vcpus, memory = draw(sizes)
            events.append(InstanceEvent(instance_id, account, "create", at, max(vcpus, 1), max(memory, 1)))
        elif deleted and index == len(times) - 1:
            events.append(InstanceEvent(instance_id, account, "delete", at))
        else:
            events.append(InstanceEvent(instance_id, account, "resize", at, *draw(sizes)))
    return events


@st.composite
def inventories(draw: st.DrawFn) -> list[InstanceEvent]:
    count = draw(st.integers(min_value=0, max_value=8))
    return [event for n in range(count) for event in draw(instance_history(f"i-{n:03d}"))]


def exact(records: list[UsageRecord]) -> list[dict[str, Any]]:
    """Records as JSON values: quantities compared digit for digit, not just numerically."""
    return [record.model_dump(mode="json") for record in records]


def store_order(events: list[InstanceEvent]) -> list[InstanceEvent]:
    return sorted(events, key=lambda event: (event.instance_id, event.at))


@settings(max_examples=300, deadline=None)
@given(inventories())
def test_the_stream_gives_exactly_compute_usages_records(events: list[InstanceEvent]) -> None:
    expected = sorted(compute_usage(events, OCTOBER), key=lambda r: (r.resource_id, r.metric))

    assert exact(list(stream_compute_usage(store_order(events), OCTOBER))) == exact(expected)


@settings(max_examples=100, deadline=None)
@given(inventories())
def test_an_instances_own_events_may_come_in_any_order(events: list[InstanceEvent]) -> None:
    reversed_within = sorted(events, key=lambda event: event.instance_id)[::-1]
    grouped = sorted(reversed_within, key=lambda event: event.instance_id)  # stable: times reversed

    assert exact(list(stream_compute_usage(grouped, OCTOBER))) == exact(
        list(stream_compute_usage(store_order(events), OCTOBER))
    )


def at(day: int) -> datetime:
    return datetime(2026, 10, day, tzinfo=UTC)


def test_instances_out_of_order_or_twice_are_refused() -> None:
    a = InstanceEvent("i-a", "acct-0001", "create", at(1), 1, 1)
    b = InstanceEvent("i-b", "acct-0001", "create", at(1), 1, 1)
    a_again = InstanceEvent("i-a", "acct-0001", "delete", at(5))

    with pytest.raises(ValueError, match="'i-a' after 'i-b'"):
        list(stream_compute_usage([b, a], OCTOBER))
    with pytest.raises(ValueError, match="'i-a' after 'i-b'"):
        list(stream_compute_usage([a, b, a_again], OCTOBER))


def test_an_inconsistent_history_is_an_error_as_in_compute_usage() -> None:
    events = [
        InstanceEvent("i-x", "acct-0001", "create", at(1), 1, 1),
        InstanceEvent("i-x", "acct-0001", "delete", at(2)),
        InstanceEvent("i-x", "acct-0001", "resize", at(3), 1, 1),
    ]

    with pytest.raises(ValueError, match=r"'i-x'.*after its delete"):
        list(stream_compute_usage(events, OCTOBER))


def test_the_store_streams_what_it_lists(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    seed(path, OCTOBER, accounts=30)
    store = ComputeStore(path)

    streamed = list(store.iter_events(batch_size=7))

    assert streamed == store.events()
    assert all(event.at.tzinfo is UTC for event in streamed)


def test_a_row_not_written_by_the_store_is_still_checked(tmp_path: Path) -> None:
    store = ComputeStore(tmp_path / "compute.sqlite3")
    store.record(InstanceEvent("i-1", "acct-0001", "create", at(1), 2, 2048))
    with store._transaction() as conn:  # a row the store itself would never write
        conn.execute("UPDATE instance_events SET at = '2026-10-01T02:00:00.000000+02:00', vcpus = 0")

    with pytest.raises(ValueError, match="vcpus of a create event must be positive"):
        list(store.iter_events())


def test_closing_the_stream_early_releases_the_store(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    seed(path, OCTOBER, accounts=5)
    store = ComputeStore(path)
    events = store.iter_events(batch_size=2)

    next(events)
    events.close()
    store.clear()  # a writer is not blocked by the abandoned read

    assert store.events() == []


def test_a_writer_is_not_blocked_by_a_stream_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    seed(path, OCTOBER, accounts=5)
    store = ComputeStore(path)
    before = store.events()
    events = store.iter_events(batch_size=2)
    first = next(events)

    store.record(InstanceEvent("i-new", "acct-0001", "create", at(2), 1, 1024))  # WAL: no lock wait

    assert [first, *events] == before  # the stream reads its own snapshot
    assert len(store.events()) == len(before) + 1


async def test_the_service_streams_compute_usage_of_its_store(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    seed(path, OCTOBER, accounts=60)
    expected = compute_usage(ComputeStore(path).events(), OCTOBER)

    streamed = [record async for record in ComputeService(path).usage(OCTOBER)]

    assert exact(streamed) == exact(sorted(expected, key=lambda r: (r.resource_id, r.metric)))
