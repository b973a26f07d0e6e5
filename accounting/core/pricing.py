"""Pricing: one account's billable usage of one item → invoice lines.

Quantities and prices are exact ``Decimal``; the only rounding is ``RateCard.round_money`` on each
line's amount (line-level rounding). Every line's quantity is printed with the normalizer's
``QUANTITY_PLACES`` (``1000.000000`` beside ``9000.000000``), except a package line's, which counts
packages.
"""

from __future__ import annotations

from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

from accounting.core.rate_card import Graduated, Item, Package, PerUnit, RateCard, Tier, Volume
from accounting.core.usage import QUANTITY_PLACES, BillableUsage
from contracts import InvoiceLine

# Sums, differences and products of the card's decimals are exact at this precision; should one
# ever not be, Inexact raises instead of silently rounding a quantity. Its methods are called
# directly (``_EXACT.multiply``): no thread's context is touched, and no context is copied per line.
_EXACT = Context(prec=120, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def price_usage(usage: BillableUsage, item_key: str, item: Item, card: RateCard) -> list[InvoiceLine]:
    """Price ``usage`` of the item ``item_key`` with the card's rounding; one line per charged tier.

    per_unit and volume give one line, package one line counting started packages, graduated one
    line per tier holding units (a zero quantity gives a single tier-1 line). Raises ``ValueError``
    for a negative quantity or a unit that is not the item's (callers check units beforehand).
    """
    if usage.quantity < 0:
        raise ValueError(f"{usage.account_id}/{item_key}: quantity {usage.quantity} is negative")
    if usage.unit != item.unit:
        raise ValueError(
            f"{usage.account_id}/{item_key}: usage is in {usage.unit!r}, the card in {item.unit!r}"
        )
    price = item.price
    if isinstance(price, PerUnit):
        return [_line(item_key, item, card, None, _places(usage.quantity), item.unit, price.unit_price)]
    if isinstance(price, Graduated):
        return [
            _line(item_key, item, card, tier, _places(quantity), item.unit, unit_price)
            for tier, quantity, unit_price in graduated_split(usage.quantity, price.tiers)
        ]
    if isinstance(price, Volume):
        tier, unit_price = volume_tier(usage.quantity, price.tiers)
        return [_line(item_key, item, card, tier, _places(usage.quantity), item.unit, unit_price)]
    return [_package_line(usage, item_key, item, card, price)]


def graduated_split(quantity: Decimal, tiers: list[Tier]) -> list[tuple[int, Decimal, Decimal]]:
    """``(tier number from 1, quantity in that tier, unit price)`` for every tier holding units.

    A tier holds the units above the previous tier's ``up_to`` up to and including its own; the
    quantities sum exactly to ``quantity``. A zero quantity gives ``[(1, 0, first price)]``.
    """
    if quantity == 0:
        return [(1, quantity, tiers[0].unit_price)]
    split: list[tuple[int, Decimal, Decimal]] = []
    lower = Decimal(0)
    for number, tier in enumerate(tiers, start=1):
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        if upper > lower:
            split.append((number, _EXACT.subtract(upper, lower), tier.unit_price))
        if tier.up_to is None or quantity <= tier.up_to:
            break
        lower = tier.up_to
    return split


def volume_tier(quantity: Decimal, tiers: list[Tier]) -> tuple[int, Decimal]:
    """``(tier number from 1, unit price)`` of the tier the total ``quantity`` falls in."""
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or quantity <= tier.up_to:
            return number, tier.unit_price
    raise ValueError("the last tier must be unbounded")  # the rate card guarantees it


def _places(quantity: Decimal) -> Decimal:
    """``quantity`` written with exactly ``QUANTITY_PLACES``; raises ``Inexact`` rather than round.

    The normalizer already rounded it to those places, and the rate card refuses a tier bound finer
    than them, so only a caller's unrounded quantity can raise.
    """
    return _EXACT.quantize(quantity, QUANTITY_PLACES)


def _package_line(
    usage: BillableUsage, item_key: str, item: Item, card: RateCard, price: Package
) -> InvoiceLine:
    packages = _EXACT.divide_int(usage.quantity, price.package_size)
    if _EXACT.remainder(usage.quantity, price.package_size):
        packages = _EXACT.add(packages, 1)
    size = format(price.package_size.normalize(), "f")
    return _line(item_key, item, card, None, packages, f"package of {size} {item.unit}", price.package_price)


def _line(
    item_key: str,
    item: Item,
    card: RateCard,
    tier: int | None,
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
) -> InvoiceLine:
    description = item.description if tier is None else f"{item.description} (tier {tier})"
    return InvoiceLine(
        item=item_key,
        description=description,
        tier=tier,
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        amount=card.round_money(_EXACT.multiply(quantity, unit_price)),
    )
