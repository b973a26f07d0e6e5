"""The network service's pure usage logic: counter readings → egress per interface, billed in the
period of the later reading, less each account's allowance, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.core.normalizer import Converter
from accounting.runtime.settings import load_rate_card
from contracts import Period, UsageRecord
from workers.network.plans import ALWAYS, MAX_BYTES, Plan, in_effect, parse_bytes, plan_histories
from workers.network.usage import (
    METRIC,
    UNIT,
    AccountInterfaces,
    CounterReading,
    InterfaceReadings,
    interface_egress,
    network_usage,
    stream_network_usage,
)

ROOT = Path(__file__).resolve().parents[2]
SEP, OCT, NOV = Period.month("2026-09"), Period.month("2026-10"), Period.month("2026-11")
GB = 10**9


def at(day: int, hour: int = 0, *, month: int = 10, micro: int = 0) -> datetime:
    return datetime(2026, month, day, hour, 0, 0, micro, tzinfo=UTC)


def read(interface: str, when: datetime, counter: int, account: str = "acct-0001") -> CounterReading:
    return CounterReading(interface, account, when, counter)


def one(records: list[UsageRecord], interface: str) -> UsageRecord:
    [record] = [r for r in records if r.resource_id == interface]
    return record


def gross(records: list[UsageRecord], interface: str) -> int | None:
    found = [r for r in records if r.resource_id == interface]
    return int(found[0].attributes["gross_bytes"]) if found else None


# --- counters to egress ---


def test_the_bytes_between_two_readings_are_billed_in_the_period_of_the_later_one() -> None:
    readings = [
        read("nic-1", at(30, 21, month=9), 1_000),
        read("nic-1", at(1, 0), 1_500),
        read("nic-1", at(2), 4_000),
    ]

    [record] = network_usage(readings, [], OCT)

    assert (record.metric, record.unit, record.resource_type) == ("egress", "byte", "interface")
    assert record.quantity == Decimal(3_000)  # 500 since the last September reading, then 2,500
    assert record.attributes == {
        "gross_bytes": "3000",
        "included_bytes": "0",
        "readings": "2",
        "counter_resets": "0",
    }
    assert gross(network_usage(readings, [], SEP), "nic-1") == 1_000  # counted from zero at attachment


def test_a_reading_at_the_start_is_inside_and_one_at_the_end_is_the_next_periods() -> None:
    readings = [
        read("nic-1", OCT.start, 100),
        read("nic-1", OCT.end, 350),
        read("nic-1", at(3, month=11), 400),
    ]

    assert gross(network_usage(readings, [], OCT), "nic-1") == 100
    assert gross(network_usage(readings, [], NOV), "nic-1") == 300


def test_a_counter_that_goes_down_was_reset_and_counts_again_from_zero() -> None:
    readings = [read("nic-1", at(1), 10_000), read("nic-1", at(2), 12_000), read("nic-1", at(3), 700)]

    record = one(network_usage(readings, [], OCT), "nic-1")

    # 10,000 since attachment, 2,000, then 700 since the reset (what it sent before the reset is lost)
    assert record.quantity == Decimal(12_700)
    assert record.attributes["counter_resets"] == "1"


def test_an_idle_interface_is_listed_with_zero_and_one_not_read_in_the_period_is_not_listed() -> None:
    readings = [
        read("nic-idle", at(20, month=9), 5_000),
        read("nic-idle", at(5), 5_000),
        read("nic-gone", at(20, month=9), 9_000),  # detached before October
        read("nic-later", at(2, month=11), 1),  # attached after it
    ]

    records = network_usage(readings, [], OCT)

    assert [(r.resource_id, r.quantity) for r in records] == [("nic-idle", Decimal(0))]


def test_readings_after_the_end_never_change_the_period() -> None:
    before = [read("nic-1", at(1), 10), read("nic-1", at(31, 23), 20)]
    after = [*before, read("nic-1", at(1, 1, month=11), 5), read("nic-1", at(9, month=11), 10**12)]

    assert network_usage(before, [], OCT) == network_usage(after, [], OCT)


def test_quantities_are_exact_whole_bytes_at_the_largest_counter() -> None:
    readings = [read("nic-1", at(1), MAX_BYTES - 1), read("nic-1", at(2), MAX_BYTES)]

    [record] = network_usage(readings, [], OCT)

    assert record.quantity == Decimal(MAX_BYTES)
    assert str(record.quantity) == "9223372036854775807"  # digits, never an exponent or a float
    assert record.model_dump(mode="json")["quantity"] == "9223372036854775807"


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=20 * 24 * 3600), st.integers(min_value=0, max_value=2**40)
        ),
        min_size=1,
        max_size=40,
    ),
    start=st.integers(min_value=-40 * 24 * 3600, max_value=0),
)
def test_every_byte_the_counter_counted_is_billed_in_exactly_one_period(
    steps: list[tuple[int, int]], start: int
) -> None:
    moment = SEP.start + timedelta(seconds=start)
    readings, counted, previous = [], 0, None
    for gap, counter in steps:
        moment += timedelta(seconds=gap)
        readings.append(read("nic-1", moment, counter))
        counted += counter if previous is None or counter < previous else counter - previous
        previous = counter
    months = [Period.month(f"{year}-{month:02d}") for year in (2026, 2027) for month in range(1, 13)]

    billed = sum(gross(network_usage(readings, [], month), "nic-1") or 0 for month in months)

    assert billed == counted


def test_interface_egress_refuses_times_that_do_not_increase() -> None:
    interface = InterfaceReadings("nic-1", [at(2), at(1)], [1, 2])

    with pytest.raises(ValueError, match=r"nic-1.*do not strictly increase"):
        interface_egress(interface, OCT)
    with pytest.raises(ValueError, match="2 reading time"):
        interface_egress(InterfaceReadings("nic-1", [at(1), at(2)], [1]), OCT)


# --- the allowance ---


def test_the_allowance_is_spent_over_the_accounts_interfaces_in_id_order_never_below_zero() -> None:
    readings = [
        read("nic-b", at(2), 30 * GB),
        read("nic-a", at(2), 8 * GB),
        read("nic-c", at(2), 1 * GB),
        read("nic-other", at(2), 50 * GB, account="acct-0002"),
    ]
    plans = [Plan("acct-0001", parse_bytes("10 GB"))]

    records = network_usage(readings, plans, OCT)

    assert [(r.account_id, r.resource_id, r.quantity) for r in records] == [
        ("acct-0001", "nic-a", Decimal(0)),
        ("acct-0001", "nic-b", Decimal(28 * GB)),
        ("acct-0001", "nic-c", Decimal(1 * GB)),
        ("acct-0002", "nic-other", Decimal(50 * GB)),  # no plan: no allowance
    ]
    assert one(records, "nic-a").attributes["included_bytes"] == str(8 * GB)
    assert one(records, "nic-b").attributes["included_bytes"] == str(2 * GB)
    assert one(records, "nic-c").attributes["included_bytes"] == "0"


def test_an_account_that_sends_exactly_its_allowance_owes_zero_on_either_byte_base() -> None:
    readings = [read("nic-1", at(3), 107_374_182_400)]

    [record] = network_usage(readings, [Plan("acct-0001", parse_bytes("100 GiB"))], OCT)

    assert record.quantity == 0
    assert record.attributes["included_bytes"] == "107374182400"


def test_the_plan_in_effect_at_the_periods_start_applies_so_an_upgrade_waits_for_the_next_period() -> None:
    readings = [read("nic-1", at(3), 50 * GB), read("nic-1", at(3, month=11), 100 * GB)]
    plans = [
        Plan("acct-0001", 10 * GB, ALWAYS),
        Plan("acct-0001", 40 * GB, at(15)),  # upgraded in the middle of October
    ]

    assert one(network_usage(readings, plans, OCT), "nic-1").quantity == 40 * GB
    assert one(network_usage(readings, plans, NOV), "nic-1").quantity == 10 * GB


def test_accounts_must_stream_in_increasing_order_so_none_gets_its_allowance_twice() -> None:
    account = AccountInterfaces("acct-0002", None, [InterfaceReadings("nic-1", [at(2)], [5])])
    earlier = AccountInterfaces("acct-0001", None, [InterfaceReadings("nic-2", [at(2)], [5])])

    with pytest.raises(ValueError, match="not in increasing order"):
        list(stream_network_usage([account, earlier], OCT))
    with pytest.raises(ValueError, match="not in increasing order"):
        list(stream_network_usage([account, account], OCT))


def test_a_plan_that_starts_after_the_period_start_is_refused_by_the_stream() -> None:
    account = AccountInterfaces(
        "acct-0001", Plan("acct-0001", GB, at(2)), [InterfaceReadings("nic-1", [at(3)], [5])]
    )

    with pytest.raises(ValueError, match="after the period's start"):
        list(stream_network_usage([account], OCT))


# --- readings that do not fit together ---


def test_an_identical_reading_twice_counts_once_and_a_different_one_is_refused() -> None:
    twice = [read("nic-1", at(2), 100), read("nic-1", at(2), 100)]
    assert one(network_usage(twice, [], OCT), "nic-1").quantity == 100

    with pytest.raises(ValueError, match=r"nic-1.*two different counters"):
        network_usage([read("nic-1", at(2), 100), read("nic-1", at(2), 101)], [], OCT)


def test_an_interface_under_two_accounts_is_refused() -> None:
    readings = [read("nic-1", at(2), 1, account="acct-0001"), read("nic-1", at(3), 2, account="acct-0002")]

    with pytest.raises(ValueError, match=r"nic-1.*acct-0002"):
        network_usage(readings, [], OCT)


def test_two_plans_of_one_account_at_the_same_instant_are_refused() -> None:
    with pytest.raises(ValueError, match="two plans effective from"):
        plan_histories([Plan("acct-0001", 1), Plan("acct-0001", 2)])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interface_id": ""}, "interface_id must be a non-empty string"),
        ({"interface_id": "x" * 257}, "longer than 256"),
        ({"account_id": " "}, "account_id must be a non-empty string"),
        ({"at": datetime(2026, 10, 2)}, "timezone-aware"),  # naive: refused
        ({"tx_bytes": -1}, "not between 0 and"),
        ({"tx_bytes": 2**63}, "not between 0 and"),
        ({"tx_bytes": 1.0}, "whole number of bytes"),
        ({"tx_bytes": True}, "whole number of bytes"),
    ],
)
def test_an_invalid_reading_names_its_field(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "interface_id": "nic-1",
        "account_id": "acct-0001",
        "at": at(2),
        "tx_bytes": 5,
    }
    with pytest.raises(ValueError, match=message):
        CounterReading(**(values | fields))  # type: ignore[arg-type]


def test_a_reading_is_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    reading = CounterReading("nic-1", "acct-0001", datetime(2026, 10, 2, 2, tzinfo=paris), 5)
    assert reading.at == at(2) and reading.at.tzinfo is UTC


# --- plans ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100 GB", 100 * GB),
        ("100 GiB", 100 * 2**30),
        ("1.5 kB", 1_500),
        (" 10GB ", 10 * GB),
        ("0 B", 0),
        ("1 TB", 10**12),
        ("0.5 KiB", 512),
    ],
)
def test_parse_bytes_is_exact(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100", "with its unit"),
        ("100 gb", "unknown unit"),
        ("1.5 B", "whole number"),
        ("1e3 GB", "with its unit"),
        ("10 EB", "more than"),
    ],
)
def test_parse_bytes_refuses_what_is_not_whole_bytes_with_a_unit(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bytes(text)


def test_in_effect_takes_the_latest_plan_started_at_or_before_the_moment() -> None:
    plans = [Plan("a", 1, ALWAYS), Plan("a", 2, at(1)), Plan("a", 3, at(15))]

    assert in_effect(plans, at(1)) == plans[1]
    assert in_effect(plans, at(14)) == plans[1]
    assert in_effect([plans[2]], at(1)) is None


# --- what the coordinator makes of it ---


def test_the_coordinator_converts_the_unit_to_the_rate_cards_egress_item_exactly() -> None:
    card = load_rate_card(ROOT / "config" / "rate-card.toml")
    billable = {item: spec.unit for item, spec in card.items.items()}
    assert billable[METRIC] == "GB"

    decimal = Converter(OCT, billable, "decimal")
    binary = Converter(OCT, billable, "binary")

    assert decimal.factor(METRIC, UNIT) == Fraction(1, 10**9)
    assert binary.factor(METRIC, UNIT) == Fraction(1, 2**30)
    [usage] = decimal.account_usage("acct-0001", [(METRIC, UNIT, Decimal(123_456_789_012))])
    assert (usage.item, usage.quantity, usage.unit) == ("egress", Decimal("123.456789"), "GB")
