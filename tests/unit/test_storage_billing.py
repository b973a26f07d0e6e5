"""A storage allowance means the same on both sides: the storage service's records, through the
coordinator's own normalizer, bill an account holding exactly its allowance zero on a decimal card
and on a binary one.

The one place the two packages meet: tests may import both (the packages never import each other).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from accounting.core.normalizer import ByteBase, Converter
from accounting.core.usage import BillableUsage
from contracts import Period, UsageRecord
from workers.sdk.service import usage_stream
from workers.storage.plans import Subscription, parse_bytes
from workers.storage.service import StorageService
from workers.storage.store import StorageStore
from workers.storage.usage import SizeSample, storage_usage

OCT = Period.month("2026-10")
BEFORE = datetime(2026, 9, 1, tzinfo=UTC)
BASES: tuple[ByteBase, ...] = ("decimal", "binary")
GB_MONTH = {"block_storage": "GB-month", "object_storage": "GB-month"}


def billed(records: list[UsageRecord], byte_base: ByteBase) -> list[BillableUsage]:
    converter = Converter(OCT, GB_MONTH, byte_base)
    return converter.account_usage("acct-a", [(r.metric, r.unit, r.quantity) for r in records])


def exact_gb_months(records: list[UsageRecord], byte_base: ByteBase) -> Fraction:
    """What the normalizer would bill before its one rounding, exactly."""
    converter = Converter(OCT, GB_MONTH, byte_base)
    total = Fraction(0)
    for record in records:
        factor = converter.factor(record.metric, record.unit)
        assert factor is not None
        total += Fraction(record.quantity) * factor
    return total


def holding(size: int, plan: str) -> list[UsageRecord]:
    """acct-a's records: one volume of ``size`` bytes all period, on a plan of ``plan``."""
    samples = [SizeSample("vol-1", "acct-a", "volume", BEFORE, size)]
    return storage_usage(samples, [Subscription("acct-a", parse_bytes(plan))], OCT)


@pytest.mark.parametrize("byte_base", BASES)
@pytest.mark.parametrize(("plan", "size"), [("100 GB", 100 * 10**9), ("100 GiB", 100 * 2**30)])
def test_holding_exactly_the_allowance_is_billed_zero_whatever_the_card_s_gb(
    plan: str, size: int, byte_base: ByteBase
) -> None:
    records = holding(size, plan)

    assert [record.quantity for record in records] == [0]
    assert records[0].attributes["included_byte_seconds"] == str(size * 31 * 86_400)
    [usage] = billed(records, byte_base)
    assert (usage.quantity, usage.unit) == (Decimal("0.000000"), "GB-month")


@pytest.mark.parametrize("byte_base", BASES)
@pytest.mark.parametrize(("plan", "size"), [("100 GB", 100 * 10**9), ("100 GiB", 100 * 2**30)])
def test_one_byte_over_the_allowance_is_a_tiny_positive_quantity(
    plan: str, size: int, byte_base: ByteBase
) -> None:
    records = holding(size + 1, plan)

    assert [record.quantity for record in records] == [OCT.seconds]  # one byte for the whole period
    gigabyte = 10**9 if byte_base == "decimal" else 2**30
    assert exact_gb_months(records, byte_base) == Fraction(1, gigabyte) > 0
    [usage] = billed(records, byte_base)
    assert usage.quantity == 0  # far below the invoice's 6 places: 1e-9 GB-month at most


@pytest.mark.parametrize(
    ("byte_base", "over", "expected"),
    [
        ("decimal", 10**9, "1.000000"),
        ("binary", 2**30, "1.000000"),
        ("decimal", 2**30, "1.073742"),  # a GiB is 1.073741824 GB
        ("binary", 10**9, "0.931323"),  # a GB is 0.931322574615… GiB
    ],
)
def test_what_is_over_the_allowance_is_billed_in_the_card_s_gb(
    byte_base: ByteBase, over: int, expected: str
) -> None:
    for plan, size in (("100 GB", 100 * 10**9), ("100 GiB", 100 * 2**30)):
        [usage] = billed(holding(size + over, plan), byte_base)
        assert str(usage.quantity) == expected


async def test_the_service_s_answer_bills_zero_at_the_allowance_on_both_cards(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    with StorageStore(path) as store:
        # acct-a: 60 + 40 GiB in a volume and a bucket, exactly its 100 GiB plan.
        store.record_samples(
            [
                SizeSample("vol-1", "acct-a", "volume", BEFORE, 60 * 2**30),
                SizeSample("bkt-1", "acct-a", "bucket", BEFORE, 40 * 2**30),
            ]
        )
        store.set_subscription("acct-a", "100 GiB")
    records = [record async for record in usage_stream(StorageService(path).usage(OCT))]

    assert [(r.resource_id, r.quantity) for r in records] == [("bkt-1", Decimal(0)), ("vol-1", Decimal(0))]
    for byte_base in BASES:
        assert [(u.item, u.quantity) for u in billed(records, byte_base)] == [
            ("block_storage", Decimal(0)),
            ("object_storage", Decimal(0)),
        ]
