"""Exact decimal arithmetic: sums that are never rounded, and exact fractions written as decimals."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from fractions import Fraction

# Sums of decimals are exact at this precision (quantities have at most 48 digits); should one not
# be, Inexact raises and the sum is taken through Fraction instead, never rounded.
_EXACT = Context(prec=400, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` exactly, whatever their digits."""
    try:
        return _EXACT.add(a, b)
    except Inexact:
        value = terminating(Fraction(a) + Fraction(b))
        assert value is not None  # a sum of two decimals is a decimal
        return value


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = exact_add(total, value)
    return total


def terminating(value: Fraction) -> Decimal | None:
    """``value`` as an exact ``Decimal`` when it has a finite decimal expansion, else None."""
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return None
    places = max(twos, fives)
    return Decimal(f"{value.numerator * 10**places // value.denominator}E-{places}")


def rounded(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half-even to ``places`` decimal places (exact at any size)."""
    units, remainder = divmod(abs(value.numerator) * 10**places, value.denominator)
    twice = 2 * remainder
    if twice > value.denominator or (twice == value.denominator and units % 2 == 1):
        units += 1
    sign = "-" if value < 0 else ""
    return Decimal(f"{sign}{units}E-{places}")


def fraction_text(value: Fraction) -> str:
    """``1/3600``; an integer as itself."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def plain(value: Decimal) -> str:
    """Fixed-point, never ``1E-7``."""
    return format(value, "f")
