"""Normalization: each service's records in its own units → billable quantities per account.

Exact: quantities are converted and summed as ``Fraction`` and rounded once, half-even, to
``QUANTITY_PLACES`` per account and item — the quantity the customer sees. The billable unit of
each metric comes from the rate card; the conversion table below says how to get there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Literal

from accounting.core.usage import QUANTITY_PLACES, BillableUsage
from contracts import AbortCode, AbortReason, Period, UsageRecord

ByteBase = Literal["decimal", "binary"]

_SECONDS_PER_HOUR = 3600
_MIB = 2**20


def _gigabyte(byte_base: ByteBase) -> int:
    return 10**9 if byte_base == "decimal" else 2**30


Factor = Callable[[Period, ByteBase], Fraction]

CONVERSIONS: Mapping[tuple[str, str], Factor] = {
    ("vCPU-second", "vCPU-hour"): lambda _p, _b: Fraction(1, _SECONDS_PER_HOUR),
    ("MiB-second", "GB-hour"): lambda _p, base: Fraction(_MIB, _gigabyte(base) * _SECONDS_PER_HOUR),
    ("byte-second", "GB-hour"): lambda _p, base: Fraction(1, _gigabyte(base) * _SECONDS_PER_HOUR),
    # A GB-month is one GB held for the whole billing period, whatever its length.
    ("byte-second", "GB-month"): lambda period, base: 1 / (_gigabyte(base) * Fraction(period.seconds)),
    ("byte", "GB"): lambda _p, base: Fraction(1, _gigabyte(base)),
}
"""(unit a service reports, billable unit on the rate card) → factor; equal units convert as 1."""


@dataclass(frozen=True)
class Normalized:
    usage: tuple[BillableUsage, ...]
    accounts: frozenset[str]
    record_count: int


def normalize(
    records_by_service: Mapping[str, Sequence[UsageRecord]],
    period: Period,
    billable_units: Mapping[str, str],
    byte_base: ByteBase = "decimal",
) -> Normalized | tuple[AbortReason, ...]:
    """Convert and sum every record; any record that cannot be converted aborts the report.

    ``billable_units`` maps each metric to the unit it is priced in. Every unconvertible
    (service, metric, unit) becomes one reason, with the number of records it affects.
    """
    totals: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    unknown: dict[tuple[str, str, str], int] = defaultdict(int)
    accounts: set[str] = set()
    count = 0
    for service, records in records_by_service.items():
        for record in records:
            count += 1
            accounts.add(record.account_id)
            factor = _factor(record, period, billable_units, byte_base)
            if factor is None:
                unknown[(service, record.metric, record.unit)] += 1
                continue
            totals[(record.account_id, record.metric)] += Fraction(record.quantity) * factor
    if unknown:
        return tuple(
            _unknown_reason(service, metric, unit, affected, billable_units)
            for (service, metric, unit), affected in sorted(unknown.items())
        )
    usage = tuple(
        BillableUsage(
            account_id=account,
            item=metric,
            quantity=round_quantity(total),
            unit=billable_units[metric],
        )
        for (account, metric), total in sorted(totals.items())
    )
    return Normalized(usage=usage, accounts=frozenset(accounts), record_count=count)


def _factor(
    record: UsageRecord, period: Period, billable_units: Mapping[str, str], byte_base: ByteBase
) -> Fraction | None:
    target = billable_units.get(record.metric)
    if target is None:
        return None
    if record.unit == target:
        return Fraction(1)
    conversion = CONVERSIONS.get((record.unit, target))
    return None if conversion is None else conversion(period, byte_base)


def _unknown_reason(
    service: str, metric: str, unit: str, affected: int, billable_units: Mapping[str, str]
) -> AbortReason:
    target = billable_units.get(metric)
    why = (
        f"metric {metric!r} has no billable unit on the rate card"
        if target is None
        else f"no conversion from {unit!r} to {target!r} for metric {metric!r}"
    )
    return AbortReason(
        code=AbortCode.UNKNOWN_UNIT,
        service=service,
        message=f"{why} ({affected} record(s) in {unit!r})",
    )


def round_quantity(value: Fraction) -> Decimal:
    """Round an exact quantity once, half-even, to ``QUANTITY_PLACES``."""
    scaled = value / Fraction(QUANTITY_PLACES)
    return (Decimal(round(scaled)) * QUANTITY_PLACES).quantize(QUANTITY_PLACES, rounding=ROUND_HALF_EVEN)
