"""Storage usage: byte-seconds of a step function clipped to [start, end), less the allowance."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from contracts import Period, UsageRecord
from workers.storage.plans import Subscription
from workers.storage.usage import Kind, SizeSample, storage_usage

OCT = Period.month("2026-10")
OCT_SECONDS = Decimal(31 * 86_400)
GB = 10**9


def at(
    day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0, month: int = 10
) -> datetime:
    return datetime(2026, month, day, hour, minute, second, micro, tzinfo=UTC)


def sample(
    resource_id: str, when: datetime, size: int | None, account: str = "acct-a", kind: Kind = "volume"
) -> SizeSample:
    return SizeSample(resource_id, account, kind, when, size)


def one(records: list[UsageRecord]) -> UsageRecord:
    assert len(records) == 1, records
    return records[0]


def test_volume_created_before_and_deleted_after_bills_the_whole_period() -> None:
    record = one(
        storage_usage(
            [sample("vol-1", at(15, month=9), 10 * GB), sample("vol-1", at(10, month=11), None)], [], OCT
        )
    )
    assert record.quantity == 10 * GB * OCT_SECONDS == Decimal("26784000000000000")
    assert (record.account_id, record.resource_id, record.resource_type) == ("acct-a", "vol-1", "volume")
    assert (record.metric, record.unit) == ("block_storage", "byte-second")
    assert record.attributes == {"gross_byte_seconds": "26784000000000000", "included_byte_seconds": "0"}


def test_volume_living_inside_the_period_bills_its_lifetime() -> None:
    samples = [sample("vol-1", at(10, 12), 5 * GB), sample("vol-1", at(12, 12), None)]
    assert one(storage_usage(samples, [], OCT)).quantity == 5 * GB * 2 * 86_400


def test_resize_mid_period_is_exact_to_the_microsecond() -> None:
    samples = [sample("vol-1", at(1, month=9), 10 * GB), sample("vol-1", at(10, 12, 0, 0, 500_000), 15 * GB)]
    # 10 GB for 9 days 12 h 0.5 s, then 15 GB for the remaining 1857599.5 s.
    expected = Decimal(10 * GB) * Decimal("820800.5") + Decimal(15 * GB) * Decimal("1857599.5")
    assert expected == Decimal("36071997500000000")
    assert one(storage_usage(samples, [], OCT)).quantity == expected


def test_no_rounding_beyond_decimal_default_precision() -> None:
    size = 10**21 + 1  # 34 significant digits of byte-seconds: more than Decimal's default 28
    samples = [sample("vol-1", OCT.start, size), sample("vol-1", OCT.end - timedelta(microseconds=1), None)]
    expected = Decimal(f"{size * 2_678_399_999_999}e-6")
    assert one(storage_usage(samples, [], OCT)).quantity == expected


def test_one_byte_for_one_microsecond() -> None:
    samples = [sample("vol-1", OCT.start, 1), sample("vol-1", OCT.start + timedelta(microseconds=1), None)]
    assert one(storage_usage(samples, [], OCT)).quantity == Decimal("0.000001")


def test_samples_exactly_on_the_boundaries() -> None:
    samples = [
        sample("vol-start", OCT.start, 2 * GB),  # created at start: the whole period
        sample("vol-start", OCT.end, 99 * GB),  # a resize at end changes nothing inside
        sample("vol-end", OCT.end, 7 * GB),  # created at end: not in this period
        sample("vol-gone", at(1, month=9), 3 * GB),
        sample("vol-gone", OCT.end, None),  # deleted at end: existed for the whole period
    ]
    records = {r.resource_id: r.quantity for r in storage_usage(samples, [], OCT)}
    assert records == {"vol-gone": 3 * GB * OCT_SECONDS, "vol-start": 2 * GB * OCT_SECONDS}


def test_deleted_exactly_at_start_is_not_listed() -> None:
    samples = [
        sample("vol-1", at(1, month=9), GB),
        sample("vol-1", OCT.start, None),
        sample("vol-old", at(1, month=8), GB),
        sample("vol-old", at(2, month=8), None),
    ]
    assert storage_usage(samples, [], OCT) == []


def test_empty_bucket_is_listed_with_zero() -> None:
    record = one(storage_usage([sample("bkt-1", at(1, month=9), 0, kind="bucket")], [], OCT))
    assert record.quantity == 0
    assert (record.resource_type, record.metric, record.unit) == ("bucket", "object_storage", "byte-second")


def test_usage_under_the_allowance_is_zero_never_negative() -> None:
    samples = [sample("vol-1", at(1, month=9), 50 * GB)]
    record = one(storage_usage(samples, [Subscription("acct-a", 100 * GB)], OCT))
    assert record.quantity == 0
    gross = str(50 * GB * OCT_SECONDS)
    assert record.attributes == {"gross_byte_seconds": gross, "included_byte_seconds": gross}


def test_usage_over_the_allowance_leaves_the_exact_remainder() -> None:
    samples = [sample("vol-1", at(1, month=9), 150 * GB + 1)]
    record = one(storage_usage(samples, [Subscription("acct-a", 100 * GB)], OCT))
    assert record.quantity == (50 * GB + 1) * OCT_SECONDS
    assert record.attributes["included_byte_seconds"] == str(100 * GB * OCT_SECONDS)


def test_allowance_is_spent_on_volumes_first_then_by_resource_id() -> None:
    before = at(1, month=9)
    samples = [
        sample("a-bucket", before, 80 * GB, kind="bucket"),  # sorts first by id, but buckets come last
        sample("z-vol", before, 60 * GB),
        sample("m-vol", before, 30 * GB),
    ]
    records = storage_usage(samples, [Subscription("acct-a", 100 * GB)], OCT)
    included = {
        r.resource_id: Decimal(r.attributes["included_byte_seconds"]) / OCT_SECONDS / GB for r in records
    }
    quantity = {r.resource_id: r.quantity / OCT_SECONDS / GB for r in records}
    assert included == {"m-vol": 30, "z-vol": 60, "a-bucket": 10}
    assert quantity == {"m-vol": 0, "z-vol": 0, "a-bucket": 70}
    assert [r.resource_id for r in records] == ["a-bucket", "m-vol", "z-vol"]  # output order is by id


def test_account_without_subscription_is_untouched() -> None:
    before = at(1, month=9)
    samples = [
        sample("vol-a", before, 10 * GB, account="acct-a"),
        sample("vol-b", before, 10 * GB, account="acct-b"),
    ]
    subscriptions = [Subscription("acct-a", 100 * GB), Subscription("acct-idle", 100 * GB)]
    records = {r.account_id: r for r in storage_usage(samples, subscriptions, OCT)}
    assert set(records) == {"acct-a", "acct-b"}  # a subscription alone makes no record
    assert records["acct-a"].quantity == 0
    assert records["acct-b"].quantity == 10 * GB * OCT_SECONDS
    assert records["acct-b"].attributes["included_byte_seconds"] == "0"


def test_allowance_is_per_billing_period_whatever_its_length() -> None:
    day = Period(period_id="2026-10-05", start=at(5), end=at(6))
    assert Subscription("acct-a", GB // 2).allowance_byte_seconds(day) == GB // 2 * 86_400
    assert str(Subscription("acct-a", 100 * GB).allowance_byte_seconds(day)) == str(100 * GB * 86_400)
    record = one(storage_usage([sample("vol-1", at(1), 3 * GB)], [Subscription("acct-a", 1 * GB)], day))
    assert record.quantity == 2 * GB * 86_400


def test_input_order_does_not_matter_and_output_is_sorted() -> None:
    samples = [
        sample("vol-2", at(3), 4 * GB, account="acct-b"),
        sample("vol-2", at(7, 6), 8 * GB, account="acct-b"),
        sample("vol-2", at(20), None, account="acct-b"),
        sample("vol-1", at(1, month=9), GB, account="acct-b"),
        sample("bkt-9", at(2), GB, account="acct-a", kind="bucket"),
        sample("bkt-9", at(3), 2 * GB, account="acct-a", kind="bucket"),
        sample("bkt-9", at(3), 2 * GB, account="acct-a", kind="bucket"),  # delivered twice: harmless
    ]
    expected = storage_usage(samples, [Subscription("acct-b", 1 * GB)], OCT)
    assert [(r.account_id, r.resource_id) for r in expected] == [
        ("acct-a", "bkt-9"),
        ("acct-b", "vol-1"),
        ("acct-b", "vol-2"),
    ]
    shuffled = list(samples)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert storage_usage(shuffled, [Subscription("acct-b", 1 * GB)], OCT) == expected


def test_times_in_other_zones_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 10, 1, 2, 0, tzinfo=plus_two)  # == OCT.start
    assert sample("vol-1", created, GB).at == OCT.start
    assert one(storage_usage([sample("vol-1", created, GB)], [], OCT)).quantity == GB * OCT_SECONDS


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (
            [sample("vol-x", at(1), GB), sample("vol-x", at(2), None), sample("vol-x", at(3), GB)],
            "after its deletion",
        ),
        (
            [sample("vol-x", at(2), None), sample("vol-x", at(1), GB), sample("vol-x", at(3), None)],
            "after its deletion",
        ),
        ([sample("vol-x", at(1), GB), sample("vol-x", at(2), GB, kind="bucket")], "kind changes"),
        ([sample("vol-x", at(1), GB), sample("vol-x", at(2), GB, account="acct-z")], "account changes"),
        ([sample("vol-x", at(1), None)], "without any earlier size"),
        ([sample("vol-x", at(1), GB), sample("vol-x", at(1), 2 * GB)], "two different samples"),
    ],
)
def test_inconsistent_history_is_an_error_naming_the_resource(
    samples: list[SizeSample], message: str
) -> None:
    with pytest.raises(ValueError, match=rf"resource 'vol-x'.*{message}"):
        storage_usage(samples, [], OCT)


def test_invalid_samples_are_refused_naming_resource_and_field() -> None:
    with pytest.raises(ValueError, match=r"resource 'vol-x': size_bytes -1 is negative"):
        storage_usage([sample("vol-x", at(1), -1)], [], OCT)
    with pytest.raises(ValueError, match=r"resource 'vol-x': at must be a timezone-aware"):
        sample("vol-x", datetime(2026, 10, 1), GB)
    with pytest.raises(ValueError, match=r"resource 'vol-x': kind 'disk'"):
        SizeSample("vol-x", "acct-a", "disk", at(1), GB)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"resource 'vol-x': size_bytes must be a whole number"):
        SizeSample("vol-x", "acct-a", "volume", at(1), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"resource 'vol-x': account_id must be a non-empty"):
        SizeSample("vol-x", "", "volume", at(1), GB)
    with pytest.raises(ValueError, match=r"sample: resource_id must be a non-empty"):
        SizeSample("", "acct-a", "volume", at(1), GB)


def test_invalid_subscriptions_are_refused_naming_the_account() -> None:
    with pytest.raises(ValueError, match=r"account 'acct-a': included_bytes -1 is not between 0 and"):
        Subscription("acct-a", -1)
    whole = r"account 'acct-a': included_bytes must be a whole number of bytes"
    with pytest.raises(ValueError, match=whole):
        Subscription("acct-a", Decimal("100"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=whole):
        Subscription("acct-a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"account 'acct-a': effective_from must be a timezone-aware"):
        Subscription("acct-a", GB, datetime(2026, 10, 1))
    twice = [Subscription("acct-a", GB, OCT.start), Subscription("acct-a", 2 * GB, OCT.start)]
    with pytest.raises(
        ValueError, match=r"account 'acct-a' has two plans effective from 2026-10-01T00:00:00"
    ):
        storage_usage([], twice, OCT)
