"""The normalizer: exact unit conversion, one rounding per account and item, unknown units abort."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from accounting.core.normalizer import Normalized, normalize, round_quantity
from accounting.core.usage import BillableUsage
from contracts import AbortCode, AbortReason, Period, UsageRecord

OCTOBER = Period.month("2026-10")  # 31 days
NOVEMBER = Period.month("2026-11")  # 30 days
UNITS = {"vcpu": "vCPU-hour", "memory": "GB-hour", "egress": "GB", "block_storage": "GB-month"}


def rec(metric: str, quantity: str | int, unit: str, account: str = "acme") -> UsageRecord:
    return UsageRecord(
        account_id=account,
        resource_id=f"{account}-{metric}",
        resource_type="thing",
        metric=metric,
        quantity=Decimal(quantity),
        unit=unit,
    )


def normalized(
    *records: UsageRecord, period: Period = OCTOBER, binary: bool = False, service: str = "svc"
) -> Normalized:
    result = normalize({service: records}, period, UNITS, "binary" if binary else "decimal")
    assert isinstance(result, Normalized), result
    return result


def quantity(*records: UsageRecord, period: Period = OCTOBER, binary: bool = False) -> Decimal:
    [usage] = normalized(*records, period=period, binary=binary).usage
    return usage.quantity


def test_3600_vcpu_seconds_are_exactly_one_vcpu_hour() -> None:
    assert normalized(rec("vcpu", 3600, "vCPU-second")).usage == (
        BillableUsage(account_id="acme", item="vcpu", quantity=Decimal("1.000000"), unit="vCPU-hour"),
    )


def test_mib_seconds_become_gb_hours_exactly() -> None:
    assert quantity(rec("memory", 1000 * 3600, "MiB-second")) == Decimal("1.048576")


def test_mib_seconds_become_gib_hours_with_a_binary_byte_base() -> None:
    # 1000 MiB = 0.9765625 GiB: the seventh place is a tie, rounded half-even.
    assert quantity(rec("memory", 1000 * 3600, "MiB-second"), binary=True) == Decimal("0.976562")


def test_bytes_become_decimal_gigabytes() -> None:
    assert quantity(rec("egress", 1_500_000_000, "byte")) == Decimal("1.500000")


def test_bytes_become_binary_gigabytes_with_a_binary_byte_base() -> None:
    assert quantity(rec("egress", 3 * 2**30, "byte"), binary=True) == Decimal("3.000000")


def test_one_gb_for_the_whole_of_a_31_day_month_is_one_gb_month() -> None:
    assert quantity(rec("block_storage", 10**9 * 31 * 86_400, "byte-second")) == Decimal("1.000000")


def test_one_gb_for_the_whole_of_a_30_day_month_is_one_gb_month() -> None:
    held = rec("block_storage", 10**9 * 30 * 86_400, "byte-second")
    assert quantity(held, period=NOVEMBER) == Decimal("1.000000")


def test_one_gb_for_half_a_month_is_half_a_gb_month() -> None:
    held = rec("block_storage", 10**9 * 15 * 86_400, "byte-second")
    assert quantity(held, period=NOVEMBER) == Decimal("0.500000")


def test_many_tiny_records_are_summed_exactly_and_rounded_once() -> None:
    seconds = [rec("vcpu", 1, "vCPU-second") for _ in range(3600)]
    # Rounding each record (1/3600 = 0.000278 at 6 places) first would give 1.000800.
    assert quantity(*seconds) == Decimal("1.000000")


def test_round_quantity_rounds_a_tie_half_even() -> None:
    assert round_quantity(Fraction(25, 10**7)) == Decimal("0.000002")
    assert round_quantity(Fraction(35, 10**7)) == Decimal("0.000004")


def test_round_quantity_keeps_six_places() -> None:
    assert str(round_quantity(Fraction(1, 3))) == "0.333333"
    assert str(round_quantity(Fraction(0))) == "0.000000"


def test_a_record_already_in_the_billable_unit_is_taken_as_is() -> None:
    assert quantity(rec("vcpu", "12.5", "vCPU-hour")) == Decimal("12.500000")


def test_accounts_include_accounts_with_zero_usage() -> None:
    result = normalized(rec("vcpu", 3600, "vCPU-second", "acme"), rec("vcpu", 0, "vCPU-second", "idle"))

    assert result.accounts == frozenset({"acme", "idle"})
    assert [(u.account_id, u.quantity) for u in result.usage] == [
        ("acme", Decimal("1.000000")),
        ("idle", Decimal("0.000000")),
    ]


def test_record_count_counts_every_record_of_every_service() -> None:
    result = normalize(
        {"compute": [rec("vcpu", 1, "vCPU-second")] * 3, "storage": [rec("egress", 1, "byte")] * 2},
        OCTOBER,
        UNITS,
    )

    assert isinstance(result, Normalized)
    assert result.record_count == 5


def test_an_unknown_metric_aborts_naming_service_metric_unit_and_count() -> None:
    gpus = [rec("gpu", 1, "GPU-second")] * 2
    result = normalize({"compute": gpus}, OCTOBER, UNITS)

    assert result == (
        AbortReason(
            code=AbortCode.UNKNOWN_UNIT,
            service="compute",
            message="metric 'gpu' has no billable unit on the rate card (2 record(s) in 'GPU-second')",
        ),
    )


def test_a_known_metric_in_an_unconvertible_unit_aborts_naming_both_units() -> None:
    result = normalize({"compute": [rec("vcpu", 1, "core-minute")]}, OCTOBER, UNITS)

    assert result == (
        AbortReason(
            code=AbortCode.UNKNOWN_UNIT,
            service="compute",
            message="no conversion from 'core-minute' to 'vCPU-hour' for metric 'vcpu' "
            "(1 record(s) in 'core-minute')",
        ),
    )


def test_several_unknowns_give_one_reason_each_in_a_stable_order() -> None:
    records = {
        "storage": [rec("vcpu", 1, "core-minute"), rec("iops", 1, "op")],
        "compute": [rec("gpu", 1, "GPU-second"), rec("gpu", 1, "GPU-second"), rec("vcpu", 1, "vCPU-second")],
    }
    result = normalize(records, OCTOBER, UNITS)

    assert isinstance(result, tuple)
    assert [(r.service, r.message.split(" (")[1]) for r in result] == [
        ("compute", "2 record(s) in 'GPU-second')"),
        ("storage", "1 record(s) in 'op')"),
        ("storage", "1 record(s) in 'core-minute')"),
    ]


def test_usage_is_sorted_by_account_then_item() -> None:
    result = normalized(
        rec("vcpu", 3600, "vCPU-second", "zeta"),
        rec("vcpu", 3600, "vCPU-second", "acme"),
        rec("egress", 10**9, "byte", "acme"),
    )

    assert [(u.account_id, u.item) for u in result.usage] == [
        ("acme", "egress"),
        ("acme", "vcpu"),
        ("zeta", "vcpu"),
    ]


def test_the_same_item_from_several_services_is_summed_per_account() -> None:
    result = normalize(
        {"a": [rec("vcpu", 1800, "vCPU-second")], "b": [rec("vcpu", 1800, "vCPU-second")]},
        OCTOBER,
        UNITS,
    )

    assert isinstance(result, Normalized)
    assert [(u.account_id, u.quantity) for u in result.usage] == [("acme", Decimal("1.000000"))]
