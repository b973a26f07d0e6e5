"""Normalization: each service's records in its own units → billable quantities per account.

Exact: quantities are summed exactly and converted as ratios of integers, and each account's
total per item is rounded once, half-even, to ``QUANTITY_PLACES`` — the quantity the customer
sees. The billable unit of each metric comes from the rate card; ``CONVERSIONS`` says how to get
there. The same functions serve a whole report held in memory (``normalize``) and the streamed
path that prices a report account by account from the store (``accounting/core/billing.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact
from fractions import Fraction
from typing import Literal

from accounting.core.usage import QUANTITY_PLACES, BillableUsage
from contracts import AbortCode, AbortReason, Period, UsageRecord
from contracts.units import UNIT_CONVERSIONS

ByteBase = Literal["decimal", "binary"]

_SECONDS_PER_HOUR = 3600
_MIB = 2**20
_PLACES = 6
_SCALE = 10**_PLACES
assert Decimal(1).scaleb(-_PLACES) == QUANTITY_PLACES
# Sums of a service's decimal quantities are exact at this precision; should one not be, Inexact
# raises and the sum is taken as a Fraction instead.
_EXACT_SUM = Context(prec=200, traps=[Inexact])


def _gigabyte(byte_base: ByteBase) -> int:
    return 10**9 if byte_base == "decimal" else 2**30


Factor = Callable[[Period, ByteBase], Fraction]

_FACTORS: Mapping[tuple[str, str], Factor] = {
    ("vCPU-second", "vCPU-hour"): lambda _p, _b: Fraction(1, _SECONDS_PER_HOUR),
    ("MiB-second", "GB-hour"): lambda _p, base: Fraction(_MIB, _gigabyte(base) * _SECONDS_PER_HOUR),
    ("byte-second", "GB-hour"): lambda _p, base: Fraction(1, _gigabyte(base) * _SECONDS_PER_HOUR),
    # A GB-month is one GB held for the whole billing period, whatever its length.
    ("byte-second", "GB-month"): lambda period, base: 1 / (_gigabyte(base) * Fraction(period.seconds)),
    ("byte", "GB"): lambda _p, base: Fraction(1, _gigabyte(base)),
}

if set(_FACTORS) != set(UNIT_CONVERSIONS):  # one vocabulary: contracts/units.py, published in the schema
    raise ImportError(
        f"the normalizer's factors {sorted(_FACTORS)} are not the conversions of contracts/units.py "
        f"{sorted(UNIT_CONVERSIONS)}: change both together"
    )

CONVERSIONS: Mapping[tuple[str, str], Factor] = {pair: _FACTORS[pair] for pair in UNIT_CONVERSIONS}
"""(unit a service reports, billable unit on the rate card) → factor; equal units convert as 1.

The pairs are ``contracts.units.UNIT_CONVERSIONS``: the unit vocabulary the published schema of
``UsageReply`` states, so a service is told of a unit the coordinator cannot convert before a report
runs. A record in another unit still parses, and aborts its report here as ``unknown_unit``."""


@dataclass
class Converter:
    """The factor from a (metric, unit) a service reports to the metric's billable unit, or None."""

    period: Period
    billable_units: Mapping[str, str]
    byte_base: ByteBase = "decimal"
    _factors: dict[tuple[str, str], Fraction | None] = field(default_factory=dict, repr=False)

    def factor(self, metric: str, unit: str) -> Fraction | None:
        key = (metric, unit)
        if key not in self._factors:
            target = self.billable_units.get(metric)
            if target is None:
                self._factors[key] = None
            elif unit == target:
                self._factors[key] = Fraction(1)
            else:
                conversion = CONVERSIONS.get((unit, target))
                self._factors[key] = None if conversion is None else conversion(self.period, self.byte_base)
        return self._factors[key]

    def _ratio(self, account_id: str, metric: str, unit: str) -> tuple[int, int]:
        factor = self.factor(metric, unit)
        if factor is None:
            raise ValueError(f"{account_id}: no conversion for {metric!r} in {unit!r}")
        return factor.numerator, factor.denominator

    def problems(self, kinds: Iterable[tuple[str, str, str, int]]) -> tuple[AbortReason, ...]:
        """One ``unknown_unit`` reason per unconvertible ``(service, metric, unit, records)``."""
        return tuple(
            _unknown_reason(service, metric, unit, affected, self.billable_units)
            for service, metric, unit, affected in sorted(kinds)
            if self.factor(metric, unit) is None
        )

    def account_usage(
        self, account_id: str, quantities: Iterable[tuple[str, str, Decimal]]
    ) -> list[BillableUsage]:
        """One account's ``(metric, unit, quantity)`` records → its billable usage per item, sorted.

        Every (metric, unit) must convert (check ``problems`` first).
        """
        sums: dict[tuple[str, str], Decimal] = {}
        inexact: dict[tuple[str, str], Fraction] = {}
        add = _EXACT_SUM.add
        for metric, unit, quantity in quantities:
            key = (metric, unit)
            try:
                sums[key] = add(sums[key], quantity) if key in sums else _EXACT_SUM.plus(quantity)
            except Inexact:  # more than 200 significant digits: sum the rest exactly as fractions
                inexact[key] = inexact.get(key, Fraction(0)) + Fraction(quantity)
        # Each metric's exact total as a ratio of integers: over its units, the unit's sum times the
        # unit's factor. Integer arithmetic gives the same exact value as Fraction, far cheaper.
        totals: dict[str, tuple[int, int]] = {}
        for (metric, unit), total in sums.items():
            numerator, denominator = total.as_integer_ratio()
            totals[metric] = _plus(
                totals.get(metric), numerator, denominator, self._ratio(account_id, metric, unit)
            )
        for (metric, unit), extra in inexact.items():
            ratio = (extra.numerator, extra.denominator)
            totals[metric] = _plus(totals.get(metric), *ratio, self._ratio(account_id, metric, unit))
        return [
            BillableUsage(
                account_id=account_id,
                item=metric,
                quantity=round_ratio(*totals[metric]),
                unit=self.billable_units[metric],
            )
            for metric in sorted(totals)
        ]


def _plus(
    total: tuple[int, int] | None, numerator: int, denominator: int, factor: tuple[int, int]
) -> tuple[int, int]:
    """``total + numerator/denominator * factor``, exactly, as an unreduced ratio of integers."""
    top, bottom = numerator * factor[0], denominator * factor[1]
    if total is None:
        return top, bottom
    return total[0] * bottom + top * total[1], total[1] * bottom


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
    """Convert and sum every record held in memory; any record that cannot be converted aborts.

    ``billable_units`` maps each metric to the unit it is priced in. Every unconvertible
    (service, metric, unit) becomes one reason, with the number of records it affects.
    """
    converter = Converter(period, billable_units, byte_base)
    kinds: dict[tuple[str, str, str], int] = defaultdict(int)
    by_account: dict[str, list[tuple[str, str, Decimal]]] = defaultdict(list)
    count = 0
    for service, records in records_by_service.items():
        for record in records:
            count += 1
            kinds[(service, record.metric, record.unit)] += 1
            by_account[record.account_id].append((record.metric, record.unit, record.quantity))
    reasons = converter.problems((*kind, affected) for kind, affected in kinds.items())
    if reasons:
        return reasons
    usage = tuple(
        entry
        for account in sorted(by_account)
        for entry in converter.account_usage(account, by_account[account])
    )
    return Normalized(usage=usage, accounts=frozenset(by_account), record_count=count)


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
    return round_ratio(value.numerator, value.denominator)


def round_ratio(numerator: int, denominator: int) -> Decimal:
    """``numerator / denominator`` (≥ 0, denominator > 0) rounded once, half-even, to 6 places."""
    units, remainder = divmod(numerator * _SCALE, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and units % 2 == 1):
        units += 1
    return Decimal(f"{units}E-{_PLACES}")  # exact at any size: no context rounds a string
