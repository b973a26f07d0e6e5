"""The compute service's SQLite store, seed data, service and CLI, on real files in tmp_path."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from contracts import Period
from workers.compute.__main__ import app
from workers.compute.seed import MAX_MEMORY_MIB, MIN_MEMORY_MIB, VCPU_SIZES, seed
from workers.compute.service import ComputeService
from workers.compute.store import ComputeStore
from workers.compute.usage import EventKind, InstanceEvent, compute_usage

if TYPE_CHECKING:
    from workers.sdk.service import UsageService

OCTOBER = Period.month("2026-10")


def event(
    instance: str = "i-1",
    kind: EventKind = "create",
    when: datetime | None = None,
    vcpus: int | None = 2,
    memory: int | None = 4096,
    account: str = "acct-0001",
) -> InstanceEvent:
    when = when or datetime(2026, 10, 3, 12, 0, 0, 123456, tzinfo=UTC)
    return InstanceEvent(instance, account, kind, when, vcpus, memory)


@pytest.fixture
def store(tmp_path: Path) -> ComputeStore:
    return ComputeStore(tmp_path / "compute.sqlite3")


def test_round_trip_orders_by_instance_then_time(store: ComputeStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    events = [
        event("i-b", "create", datetime(2026, 9, 1, tzinfo=UTC)),
        event("i-a", "delete", datetime(2026, 10, 20, 0, 0, 0, 1, tzinfo=UTC), None, None),
        # 01:00 at +02:00 is 23:00 UTC the day before: it sorts before the 23:30 UTC event.
        event("i-a", "resize", datetime(2026, 10, 1, 1, 0, tzinfo=plus_two), 0, 0),
        event("i-a", "create", datetime(2026, 9, 30, 22, 59, 59, 999999, tzinfo=UTC)),
        event("i-a", "resize", datetime(2026, 9, 30, 23, 30, tzinfo=UTC), 8, 16384),
    ]

    assert store.record_many(events) == 5
    stored = store.events()

    assert [(e.instance_id, e.kind) for e in stored] == [
        ("i-a", "create"),
        ("i-a", "resize"),
        ("i-a", "resize"),
        ("i-a", "delete"),
        ("i-b", "create"),
    ]
    assert stored[1].vcpus == 0
    assert stored[2].vcpus == 8
    assert set(stored) == set(events)
    assert all(e.at.tzinfo is UTC for e in stored)
    assert stored[0].at.microsecond == 999999


def test_events_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    with ComputeStore(path) as first:
        first.record(event())

    assert ComputeStore(str(path)).events() == [event()]


def test_times_are_stored_as_fixed_width_utc_text(store: ComputeStore) -> None:
    store.record(event(when=datetime(2026, 10, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))))

    with sqlite3.connect(store.path) as conn:
        (stored,) = conn.execute("SELECT at FROM instance_events").fetchone()
    assert stored == "2026-10-01T00:00:00.000000+00:00"


def test_recording_the_same_event_twice_is_a_no_op(store: ComputeStore) -> None:
    store.record(event())

    assert store.record_many([event(), event("i-2")]) == 1
    assert len(store.events()) == 2


def test_a_different_event_at_the_same_instant_is_rejected(store: ComputeStore) -> None:
    store.record(event())

    with pytest.raises(ValueError, match="'i-1' already has a different event"):
        store.record(event(vcpus=4))


def test_a_failed_batch_stores_nothing(store: ComputeStore) -> None:
    store.record(event())
    batch = [event("i-2"), event(vcpus=16)]

    with pytest.raises(ValueError, match="i-1"):
        store.record_many(batch)
    assert store.events() == [event()]


@pytest.mark.parametrize(
    ("kind", "vcpus", "memory", "field"),
    [
        ("create", -1, 4096, "vcpus"),
        ("resize", 2, -1, "memory_mib"),
        ("create", None, 4096, "vcpus"),
        ("create", 2, None, "memory_mib"),
        ("delete", 2, None, "vcpus"),
    ],
)
def test_bad_sizes_are_rejected_naming_the_field(
    store: ComputeStore, kind: EventKind, vcpus: int | None, memory: int | None, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        store.record(event(kind=kind, vcpus=vcpus, memory=memory))
    assert store.events() == []


def test_naive_datetime_is_rejected(store: ComputeStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.record(event(when=datetime(2026, 10, 1)))


def test_store_revalidates_events_that_bypassed_construction(store: ComputeStore) -> None:
    tampered = event()
    object.__setattr__(tampered, "vcpus", -3)
    unknown = event()
    object.__setattr__(unknown, "kind", "reboot")

    with pytest.raises(ValueError, match="vcpus -3 is negative"):
        store.record(tampered)
    with pytest.raises(ValueError, match="kind 'reboot'"):
        store.record(unknown)
    assert store.events() == []


def test_closed_store_refuses_work(store: ComputeStore) -> None:
    store.close()

    with pytest.raises(RuntimeError, match="closed"):
        store.events()


def test_clear_empties_the_store(store: ComputeStore) -> None:
    store.record(event())
    store.clear()

    assert store.events() == []


def test_seed_is_deterministic_and_reseeding_does_not_duplicate(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"

    summary = seed(first, OCTOBER)
    again = seed(first, OCTOBER)
    seed(second, OCTOBER)

    assert summary == again
    assert ComputeStore(first).events() == ComputeStore(second).events()
    assert len(ComputeStore(first).events()) == summary.events
    seed(second, OCTOBER, rng_seed=8)
    assert ComputeStore(first).events() != ComputeStore(second).events()


def test_seed_gives_dozens_of_accounts_whose_usage_computes(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    summary = seed(path, OCTOBER)
    events = ComputeStore(path).events()

    records = compute_usage(events, OCTOBER)

    assert summary.accounts == 40
    assert summary.instances >= 40
    assert summary.deleted_before_period >= 3
    assert summary.stopped >= 2
    listed = {r.resource_id for r in records}
    assert len(listed) == summary.instances - summary.deleted_before_period
    assert len(records) == 2 * len(listed)
    assert len({r.account_id for r in records}) >= 24
    assert all(r.account_id.startswith("acct-") and len(r.account_id) == 9 for r in records)
    stopped = {r.resource_id for r in records if r.metric == "vcpu" and r.quantity == 0}
    assert len(stopped) >= summary.stopped
    assert sum(r.quantity for r in records if r.metric == "vcpu") > 0
    kinds = {e.kind for e in events}
    assert kinds == {"create", "resize", "delete"}
    created = [e for e in events if e.kind == "create"]
    assert {e.vcpus for e in created} <= set(VCPU_SIZES)
    assert all(MIN_MEMORY_MIB <= (e.memory_mib or 0) <= MAX_MEMORY_MIB for e in created)
    assert any(e.kind == "create" and e.at < OCTOBER.start for e in events)
    assert any(e.kind == "create" and OCTOBER.contains(e.at) for e in events)
    assert any(e.kind == "delete" and OCTOBER.contains(e.at) for e in events)
    assert any(e.kind == "resize" and OCTOBER.contains(e.at) and (e.vcpus or 0) > 0 for e in events)


def test_seed_works_for_a_small_sample(tmp_path: Path) -> None:
    summary = seed(tmp_path / "one.sqlite3", OCTOBER, accounts=1, rng_seed=1)

    assert summary.accounts == 1
    compute_usage(ComputeStore(tmp_path / "one.sqlite3").events(), OCTOBER)


async def test_service_usage_streams_the_store(tmp_path: Path) -> None:
    path = tmp_path / "compute.sqlite3"
    seed(path, OCTOBER)
    service = ComputeService(path)

    records = [record async for record in service.usage(OCTOBER)]

    assert service.name == "compute"
    expected = compute_usage(ComputeStore(path).events(), OCTOBER)
    assert records == sorted(expected, key=lambda r: (r.resource_id, r.metric))  # streamed by instance
    assert {r.unit for r in records} == {"vCPU-second", "MiB-second"}
    assert all(isinstance(r.quantity, Decimal) for r in records)


async def test_service_on_an_empty_store_reports_nothing(tmp_path: Path) -> None:
    service = ComputeService(tmp_path / "empty.sqlite3")

    assert [record async for record in service.usage(OCTOBER)] == []


def test_service_satisfies_the_sdk_protocol(tmp_path: Path) -> None:
    service: UsageService = ComputeService(tmp_path / "compute.sqlite3")  # checked by mypy

    assert service.name == "compute"


def test_cli_seed_creates_the_directory_and_takes_the_db_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "compute.sqlite3"

    result = CliRunner().invoke(
        app, ["seed", "--period", "2026-10", "--accounts", "5"], env={"RECKON_COMPUTE_DB": str(path)}
    )

    assert result.exit_code == 0, result.output
    assert "5 accounts" in result.output
    assert ComputeStore(path).events()


def test_cli_seed_rejects_a_bad_period(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["seed", "--db", str(tmp_path / "x.sqlite3"), "--period", "October"])

    assert result.exit_code != 0
    assert "YYYY-MM" in result.output
