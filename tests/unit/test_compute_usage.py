"""The compute service's pure usage logic: lifetimes clipped to the period, exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from contracts import Period, UsageRecord
from workers.compute.usage import InstanceEvent, compute_usage

OCTOBER = Period.month("2026-10")
OCTOBER_SECONDS = Decimal(31 * 86_400)
US = timedelta(microseconds=1)


def at(
    day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0, *, month: int = 10
) -> datetime:
    return datetime(2026, month, day, hour, minute, second, micro, tzinfo=UTC)


def create(
    instance: str, when: datetime, vcpus: int = 2, memory: int = 4096, account: str = "acct-0001"
) -> InstanceEvent:
    return InstanceEvent(instance, account, "create", when, vcpus, memory)


def resize(
    instance: str, when: datetime, vcpus: int, memory: int, account: str = "acct-0001"
) -> InstanceEvent:
    return InstanceEvent(instance, account, "resize", when, vcpus, memory)


def delete(instance: str, when: datetime, account: str = "acct-0001") -> InstanceEvent:
    return InstanceEvent(instance, account, "delete", when)


def usage_of(records: list[UsageRecord], instance: str) -> dict[str, Decimal]:
    return {r.metric: r.quantity for r in records if r.resource_id == instance}


def test_instance_spanning_the_period_is_billed_exactly_the_full_period() -> None:
    events = [create("i-1", at(15, month=9), vcpus=4, memory=8192), delete("i-1", at(10, month=11))]

    records = compute_usage(events, OCTOBER)

    assert [(r.metric, r.unit, r.quantity) for r in records] == [
        ("memory", "MiB-second", 8192 * OCTOBER_SECONDS),
        ("vcpu", "vCPU-second", 4 * OCTOBER_SECONDS),
    ]
    assert records[1].quantity == Decimal("10713600")
    for record in records:
        assert record.account_id == "acct-0001"
        assert record.resource_id == "i-1"
        assert record.resource_type == "instance"
        assert record.attributes == {"vcpus": "4", "memory_mib": "8192"}


def test_instance_created_and_deleted_inside_the_period() -> None:
    events = [create("i-1", at(3, 12), vcpus=2, memory=4096), delete("i-1", at(5, 12))]

    assert usage_of(compute_usage(events, OCTOBER), "i-1") == {
        "vcpu": Decimal(2 * 172_800),
        "memory": Decimal(4096 * 172_800),
    }


def test_instance_still_running_at_period_end_is_billed_to_the_end() -> None:
    events = [create("i-1", at(31, 23), vcpus=1, memory=2048)]

    assert usage_of(compute_usage(events, OCTOBER), "i-1") == {
        "vcpu": Decimal(3600),
        "memory": Decimal(2048 * 3600),
    }


def test_resize_mid_period_sums_both_intervals_exactly() -> None:
    # 2 vCPU / 4096 MiB for 10 days and half a second, then 8 vCPU / 16384 MiB for the rest.
    events = [
        create("i-1", at(1, month=9), vcpus=2, memory=4096),
        resize("i-1", at(11, micro=500_000), vcpus=8, memory=16384),
    ]

    records = compute_usage(events, OCTOBER)

    # 2 * 864000.5 + 8 * 1814399.5 and 4096 * 864000.5 + 16384 * 1814399.5
    assert usage_of(records, "i-1") == {"vcpu": Decimal("16243197.0"), "memory": Decimal("33266067456.0")}
    assert records[0].attributes == {"vcpus": "8", "memory_mib": "16384"}


def test_microsecond_boundaries_are_exact() -> None:
    events = [
        # Lives one microsecond either side of the start: one microsecond inside.
        create("i-start", OCTOBER.start - US, vcpus=3, memory=1000),
        delete("i-start", OCTOBER.start + US),
        # Created one microsecond before the end, still running.
        create("i-end", OCTOBER.end - US, vcpus=5, memory=7),
    ]

    records = compute_usage(events, OCTOBER)

    assert usage_of(records, "i-start") == {"vcpu": Decimal("0.000003"), "memory": Decimal("0.001")}
    assert usage_of(records, "i-end") == {"vcpu": Decimal("0.000005"), "memory": Decimal("0.000007")}


def test_instance_deleted_exactly_at_period_start_is_not_listed() -> None:
    events = [create("i-1", at(1, month=9)), delete("i-1", OCTOBER.start)]

    assert compute_usage(events, OCTOBER) == []


def test_instance_created_exactly_at_period_end_is_not_listed() -> None:
    events = [create("i-1", OCTOBER.end), delete("i-1", at(2, month=11))]

    assert compute_usage(events, OCTOBER) == []


def test_instance_created_at_period_start_is_billed_from_the_start() -> None:
    events = [create("i-1", OCTOBER.start, vcpus=1, memory=1)]

    assert usage_of(compute_usage(events, OCTOBER), "i-1") == {
        "vcpu": OCTOBER_SECONDS,
        "memory": OCTOBER_SECONDS,
    }


def test_stopped_instance_is_listed_with_zero_usage() -> None:
    events = [
        create("i-stopped", at(1, month=8), vcpus=4, memory=8192),
        resize("i-stopped", at(20, month=9), vcpus=0, memory=0),
    ]

    records = compute_usage(events, OCTOBER)

    assert [(r.metric, r.quantity) for r in records] == [("memory", Decimal(0)), ("vcpu", Decimal(0))]
    assert records[0].attributes == {"vcpus": "0", "memory_mib": "0"}
    assert records[0].model_dump(mode="json")["quantity"] == "0"


def test_stopped_then_restarted_counts_only_the_running_part() -> None:
    events = [
        create("i-1", at(1, month=9), vcpus=4, memory=1024),
        resize("i-1", at(1, month=9) + timedelta(days=1), vcpus=0, memory=0),
        resize("i-1", at(31), vcpus=2, memory=512),
    ]

    assert usage_of(compute_usage(events, OCTOBER), "i-1") == {
        "vcpu": Decimal(2 * 86_400),
        "memory": Decimal(512 * 86_400),
    }


def test_resize_at_period_end_does_not_change_the_period() -> None:
    events = [create("i-1", at(1, month=9), vcpus=2, memory=2048), resize("i-1", OCTOBER.end, 16, 65536)]

    records = compute_usage(events, OCTOBER)

    assert usage_of(records, "i-1")["vcpu"] == 2 * OCTOBER_SECONDS
    assert records[0].attributes == {"vcpus": "2", "memory_mib": "2048"}


def test_attributes_show_the_size_at_deletion() -> None:
    events = [
        create("i-1", at(1, month=9), vcpus=2, memory=2048),
        resize("i-1", at(10), vcpus=4, memory=8192),
        delete("i-1", at(20)),
    ]

    records = compute_usage(events, OCTOBER)

    assert {r.metric: r.attributes for r in records} == {
        "vcpu": {"vcpus": "4", "memory_mib": "8192"},
        "memory": {"vcpus": "4", "memory_mib": "8192"},
    }
    assert usage_of(records, "i-1")["vcpu"] == Decimal(2 * 9 * 86_400 + 4 * 10 * 86_400)


def test_output_is_sorted_by_account_resource_and_metric() -> None:
    events = [
        create("i-b", at(2), account="acct-0002"),
        create("i-z", at(2), account="acct-0001"),
        create("i-a", at(2), account="acct-0002"),
        create("i-gone", at(1, month=8), account="acct-0001"),
        delete("i-gone", at(1, month=9), account="acct-0001"),
    ]

    records = compute_usage(events, OCTOBER)

    assert [(r.account_id, r.resource_id, r.metric) for r in records] == [
        ("acct-0001", "i-z", "memory"),
        ("acct-0001", "i-z", "vcpu"),
        ("acct-0002", "i-a", "memory"),
        ("acct-0002", "i-a", "vcpu"),
        ("acct-0002", "i-b", "memory"),
        ("acct-0002", "i-b", "vcpu"),
    ]


def test_out_of_order_events_give_the_same_result() -> None:
    events = [
        create("i-1", at(1, month=9), vcpus=2, memory=4096),
        resize("i-1", at(5), vcpus=4, memory=8192),
        resize("i-1", at(12, 6, 30, 15, 250), vcpus=1, memory=2048),
        delete("i-1", at(28)),
        create("i-2", at(7, 8), vcpus=8, memory=32768),
        resize("i-2", at(9), vcpus=0, memory=0),
    ]
    expected = compute_usage(events, OCTOBER)

    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert compute_usage(reversed(shuffled), OCTOBER) == expected


def test_times_in_other_timezones_are_compared_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 02:00 on 1 November at +02:00 is midnight UTC: the period end.
    events = [create("i-1", datetime(2026, 11, 1, 1, 0, tzinfo=plus_two), vcpus=1, memory=1)]

    assert usage_of(compute_usage(events, OCTOBER), "i-1") == {"vcpu": Decimal(3600), "memory": Decimal(3600)}
    assert events[0].at.tzinfo is UTC


def test_event_after_delete_is_an_error_naming_the_instance() -> None:
    events = [create("i-late", at(1)), delete("i-late", at(10)), resize("i-late", at(11), 4, 4096)]

    with pytest.raises(ValueError, match=r"'i-late'.*after its delete"):
        compute_usage(events, OCTOBER)


def test_event_before_create_is_an_error_naming_the_instance() -> None:
    events = [resize("i-early", at(1), 4, 4096), create("i-early", at(2))]

    with pytest.raises(ValueError, match=r"'i-early'.*before its create"):
        compute_usage(events, OCTOBER)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([resize("i-x", at(1), 1, 1)], "no create"),
        ([create("i-x", at(1)), create("i-x", at(2))], "2 create events"),
        ([create("i-x", at(1)), delete("i-x", at(2)), delete("i-x", at(3))], "after its delete"),
        ([create("i-x", at(1)), resize("i-x", at(1), 1, 1)], "same instant"),
        ([create("i-x", at(1)), delete("i-x", at(2), account="acct-0002")], "different accounts"),
    ],
)
def test_inconsistent_history_is_an_error_naming_the_instance(
    events: list[InstanceEvent], message: str
) -> None:
    with pytest.raises(ValueError, match=rf"'i-x'.*{message}"):
        compute_usage(events, OCTOBER)


def test_inconsistent_history_is_an_error_even_outside_the_period() -> None:
    events = [
        create("i-x", at(1, month=1)),
        delete("i-x", at(2, month=1)),
        resize("i-x", at(3, month=1), 1, 1),
    ]

    with pytest.raises(ValueError, match="'i-x'"):
        compute_usage(events, OCTOBER)


def test_no_events_no_usage() -> None:
    assert compute_usage([], OCTOBER) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"vcpus": -1}, "vcpus"),
        ({"memory_mib": -5}, "memory_mib"),
        ({"memory_mib": None}, "memory_mib"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"kind": "reboot"}, "kind"),
        ({"at": datetime(2026, 10, 1)}, "naive"),
        ({"instance_id": ""}, "instance_id"),
        ({"account_id": ""}, "account_id"),
        ({"kind": "delete"}, "delete event must not carry vcpus"),
    ],
)
def test_invalid_event_is_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {
        "instance_id": "i-1",
        "account_id": "acct-0001",
        "kind": "create",
        "at": at(1),
        "vcpus": 2,
        "memory_mib": 4096,
    } | changes

    with pytest.raises(ValueError, match=field):
        InstanceEvent(**fields)


def test_resize_may_stop_an_instance_but_not_go_negative() -> None:
    assert resize("i-1", at(1), 0, 0).vcpus == 0
    with pytest.raises(ValueError, match="vcpus -1 is negative"):
        resize("i-1", at(1), -1, 0)
