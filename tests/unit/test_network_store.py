"""The network service's SQLite store, seed, service and command line, on real files in tmp_path:
the store's stream gives exactly the pure reference's records (``network_usage``)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from contracts import Period
from workers.network.__main__ import app
from workers.network.plans import ALWAYS, Plan
from workers.network.seed import seed
from workers.network.service import NetworkService
from workers.network.store import NetworkStore
from workers.network.usage import CounterReading, network_usage
from workers.sdk.empty import can_tell_empty

if TYPE_CHECKING:
    from workers.sdk.service import UsageService

OCT = Period.month("2026-10")
GB = 10**9


def at(day: int, hour: int = 0, *, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def read(interface: str, when: datetime, counter: int, account: str = "acct-0001") -> CounterReading:
    return CounterReading(interface, account, when, counter)


@pytest.fixture
def store(tmp_path: Path) -> NetworkStore:
    return NetworkStore(tmp_path / "network.sqlite3")


async def served(service: NetworkService, period: Period = OCT) -> list[object]:
    return [record async for record in service.usage(period)]


def test_readings_round_trip_in_interface_then_time_order(store: NetworkStore) -> None:
    readings = [read("nic-b", at(2), 5), read("nic-a", at(3), 9), read("nic-a", at(1), 1)]

    assert store.record_readings(readings) == 3

    assert [(r.interface_id, r.at, r.tx_bytes) for r in store.readings()] == [
        ("nic-a", at(1), 1),
        ("nic-a", at(3), 9),
        ("nic-b", at(2), 5),
    ]


def test_times_are_stored_as_fixed_width_utc_text(store: NetworkStore) -> None:
    store.record_readings(
        [read("nic-1", datetime(2026, 10, 2, 2, tzinfo=UTC) + timedelta(microseconds=5), 1)]
    )

    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT at FROM readings").fetchall() == [("2026-10-02T02:00:00.000005+00:00",)]


def test_the_same_reading_twice_is_a_no_op_and_a_different_one_is_refused(store: NetworkStore) -> None:
    store.record_readings([read("nic-1", at(2), 10)])

    assert store.record_readings([read("nic-1", at(2), 10)]) == 0
    with pytest.raises(ValueError, match=r"nic-1.*different reading is already stored"):
        store.record_readings([read("nic-1", at(2), 11)])


def test_an_interface_stays_with_its_account(store: NetworkStore) -> None:
    store.record_readings([read("nic-1", at(2), 10, account="acct-0001")])

    with pytest.raises(ValueError, match=r"nic-1.*acct-0002.*differs"):
        store.record_readings([read("nic-1", at(3), 11, account="acct-0002")])


def test_a_failed_batch_stores_nothing(store: NetworkStore) -> None:
    store.record_readings([read("nic-1", at(2), 10)])

    with pytest.raises(ValueError):
        store.record_readings([read("nic-2", at(2), 1), read("nic-1", at(2), 99)])

    assert [r.interface_id for r in store.readings()] == ["nic-1"]


def test_plans_keep_their_history_and_take_a_unit(store: NetworkStore) -> None:
    store.set_plan("acct-0001", "10 GB")
    store.set_plan("acct-0001", 25 * GB, effective_from=at(15))
    store.set_plan("acct-0001", "20 GB")  # the same effective_from: replaced

    assert store.plans() == [Plan("acct-0001", 20 * GB, ALWAYS), Plan("acct-0001", 25 * GB, at(15))]
    with pytest.raises(ValueError, match=r"acct-0002.*with its unit"):
        store.set_plan("acct-0002", "10")


def test_the_store_gives_each_interface_its_baseline_and_the_plan_in_effect_at_the_start(
    store: NetworkStore,
) -> None:
    store.record_readings(
        [
            read("nic-1", at(20, month=9), 5),
            read("nic-1", at(30, month=9), 7),
            read("nic-1", at(2), 9),
            read("nic-1", at(2, month=11), 20),
            read("nic-2", at(3), 1, account="acct-0002"),
        ]
    )
    store.set_plan("acct-0001", 3, effective_from=at(1, month=9))
    store.set_plan("acct-0001", 4, effective_from=at(15))

    accounts = list(store.account_interfaces(OCT.start, OCT.end))

    assert [a.account_id for a in accounts] == ["acct-0001", "acct-0002"]
    [nic] = accounts[0].interfaces
    assert (nic.interface_id, list(nic.times), list(nic.counters)) == (
        "nic-1",
        [at(30, month=9), at(2)],
        [7, 9],
    )
    assert accounts[0].plan == Plan("acct-0001", 3, at(1, month=9))
    assert accounts[1].plan is None


async def test_the_service_answers_exactly_the_reference_for_the_seeded_data(tmp_path: Path) -> None:
    path = tmp_path / "network.sqlite3"
    summary = seed(path, OCT, accounts=30)
    store = NetworkStore(path)
    expected = network_usage(store.readings(), store.plans(), OCT)

    records = await served(NetworkService(path))

    assert records == expected
    assert summary.readings == len(store.readings())
    assert {r.metric for r in expected} == {"egress"} and {r.unit for r in expected} == {"byte"}
    # The sample exercises every rule: idle, reset, allowance spent, detached before the period.
    assert any(r.quantity == 0 and r.attributes["gross_bytes"] == "0" for r in expected)
    assert any(r.attributes["counter_resets"] != "0" for r in expected)
    assert any(r.attributes["included_bytes"] != "0" and r.quantity > 0 for r in expected)
    assert len({r.resource_id for r in expected}) < summary.interfaces


reading_times = st.integers(min_value=-10 * 24, max_value=40 * 24).map(
    lambda hours: OCT.start + timedelta(hours=hours)
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[CounterReading], list[Plan]]:
    readings: list[CounterReading] = []
    for interface in range(draw(st.integers(min_value=0, max_value=6))):
        account = f"acct-{draw(st.integers(min_value=1, max_value=3))}"
        for moment in draw(st.lists(reading_times, max_size=8, unique=True)):
            readings.append(
                read(f"nic-{interface}", moment, draw(st.integers(min_value=0, max_value=10**12)), account)
            )
    plans = [
        Plan(f"acct-{account}", draw(st.integers(min_value=0, max_value=10**12)), moment)
        for account in range(1, 4)
        for moment in draw(st.lists(st.one_of(st.just(ALWAYS), reading_times), max_size=2, unique=True))
    ]
    return readings, plans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_any_stored_history_streams_exactly_the_reference(
    tmp_path: Path, history: tuple[list[CounterReading], list[Plan]]
) -> None:
    readings, plans = history
    path = tmp_path / f"network-{id(history)}.sqlite3"
    NetworkStore(path).replace_all(readings, plans)

    assert await served(NetworkService(path)) == network_usage(readings, plans, OCT)
    path.unlink()


def test_seeding_is_deterministic_and_replaces_everything(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    seed(first, OCT, accounts=8)
    seed(second, OCT, accounts=3)
    seed(second, OCT, accounts=8)

    assert NetworkStore(first).readings() == NetworkStore(second).readings()
    assert NetworkStore(first).plans() == NetworkStore(second).plans()


async def test_a_new_store_is_empty_and_the_sdk_can_tell(tmp_path: Path) -> None:
    path = tmp_path / "network.sqlite3"
    service = NetworkService(path)
    checked: UsageService = service  # the SDK's protocol, checked by mypy

    assert checked.name == "network" and can_tell_empty(service) and service.is_empty()
    assert await served(service) == []
    seed(path, OCT, accounts=1)
    assert not service.is_empty()


def test_the_command_line_seeds_the_store_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "network.sqlite3"

    result = CliRunner().invoke(
        app, ["seed", "--period", "2026-10", "--accounts", "5"], env={"RECKON_NETWORK_DB": str(path)}
    )

    assert result.exit_code == 0, result.output
    assert "for 2026-10: 5 accounts" in result.output
    assert NetworkStore(path).readings()


def test_the_command_line_refuses_a_bad_period(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["seed", "--db", str(tmp_path / "x.sqlite3"), "--period", "October"])

    assert result.exit_code != 0
    assert "YYYY-MM" in result.output
