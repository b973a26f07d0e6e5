"""Pricing one account's usage of one item: every price model, tier boundaries and rounding."""

from __future__ import annotations

from decimal import Decimal, Inexact
from typing import Any

import pytest

from accounting.core.pricing import price_usage
from accounting.core.rate_card import RateCard
from accounting.core.usage import BillableUsage
from contracts import InvoiceLine

GRADUATED = {
    "model": "graduated",
    "tiers": [
        {"up_to": "1000", "unit_price": "0.100"},
        {"up_to": "10000", "unit_price": "0.080"},
        {"unit_price": "0.060"},
    ],
}
VOLUME = {
    "model": "volume",
    "tiers": [
        {"up_to": "500", "unit_price": "0.0230"},
        {"up_to": "5000", "unit_price": "0.0210"},
        {"unit_price": "0.0190"},
    ],
}
PACKAGE = {"model": "package", "package_size": "100", "package_price": "5.00"}


def make_card(price: dict[str, Any], *, unit: str = "GB", **card: Any) -> RateCard:
    fields: dict[str, Any] = {"currency": "EUR", "minor_units": 2, **card}
    fields["items"] = {"thing": {"description": "Thing", "unit": unit, "price": price}}
    return RateCard.model_validate(fields)


def price(card: RateCard, quantity: str) -> list[InvoiceLine]:
    item = card.items["thing"]
    usage = BillableUsage(account_id="acme", item="thing", quantity=Decimal(quantity), unit=item.unit)
    return price_usage(usage, "thing", item, card)


def summary(lines: list[InvoiceLine]) -> list[tuple[int | None, str, str, str]]:
    return [(line.tier, str(line.quantity), str(line.unit_price), str(line.amount)) for line in lines]


def test_per_unit_is_one_line() -> None:
    card = make_card({"model": "per_unit", "unit_price": "0.0320"}, unit="vCPU-hour")
    [line] = price(card, "744.5")
    assert line == InvoiceLine(
        item="thing",
        description="Thing",
        tier=None,
        quantity=Decimal("744.500000"),
        unit="vCPU-hour",
        unit_price=Decimal("0.0320"),
        amount=Decimal("23.82"),  # 23.8240
    )
    assert (str(line.quantity), str(line.amount)) == ("744.500000", "23.82")


def test_per_unit_zero_quantity_is_a_zero_line() -> None:
    card = make_card({"model": "per_unit", "unit_price": "0.0320"})
    assert summary(price(card, "0")) == [(None, "0.000000", "0.0320", "0.00")]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", [(1, "0.000000", "0.100", "0.00")]),
        ("999.999999", [(1, "999.999999", "0.100", "100.00")]),
        ("1000", [(1, "1000.000000", "0.100", "100.00")]),
        ("1000.000001", [(1, "1000.000000", "0.100", "100.00"), (2, "0.000001", "0.080", "0.00")]),
        ("1001", [(1, "1000.000000", "0.100", "100.00"), (2, "1.000000", "0.080", "0.08")]),
        ("10000", [(1, "1000.000000", "0.100", "100.00"), (2, "9000.000000", "0.080", "720.00")]),
        (
            "10000.5",
            [
                (1, "1000.000000", "0.100", "100.00"),
                (2, "9000.000000", "0.080", "720.00"),
                (3, "0.500000", "0.060", "0.03"),
            ],
        ),
        (
            "25000",
            [
                (1, "1000.000000", "0.100", "100.00"),
                (2, "9000.000000", "0.080", "720.00"),
                (3, "15000.000000", "0.060", "900.00"),
            ],
        ),
    ],
)
def test_graduated_splits_at_and_around_boundaries(quantity: str, expected: list[tuple[Any, ...]]) -> None:
    lines = price(make_card(GRADUATED), quantity)
    assert summary(lines) == expected
    assert sum(line.quantity for line in lines) == Decimal(quantity)


def test_every_tier_line_has_the_quantity_places_of_the_other_lines() -> None:
    # Tier bounds are written "1000" and "1E+4": the lines still all print 6 places.
    tiers = [
        {"up_to": "1000", "unit_price": "0.100"},
        {"up_to": "1E+4", "unit_price": "0.080"},
        {"unit_price": "0.060"},
    ]
    lines = price(make_card({"model": "graduated", "tiers": tiers}), "12000.250000")
    assert [str(line.quantity) for line in lines] == ["1000.000000", "9000.000000", "2000.250000"]
    [volume] = price(make_card({"model": "volume", "tiers": tiers}), "10000")
    assert str(volume.quantity) == "10000.000000"


def test_a_quantity_finer_than_the_invoice_s_places_raises_rather_than_rounds() -> None:
    # The normalizer never gives one: a quantity is never silently rounded a second time.
    with pytest.raises(Inexact):
        price(make_card({"model": "per_unit", "unit_price": "1"}), "1.0000005")
    with pytest.raises(Inexact):
        price(make_card(GRADUATED), "1000.0000005")


def test_graduated_lines_name_their_tier() -> None:
    lines = price(make_card(GRADUATED, unit="GB-month"), "1500")
    assert [line.description for line in lines] == ["Thing (tier 1)", "Thing (tier 2)"]
    assert {line.unit for line in lines} == {"GB-month"}
    assert {line.item for line in lines} == {"thing"}


@pytest.mark.parametrize(
    ("quantity", "tier", "amount"),
    [
        ("0", 1, "0.00"),
        ("500", 1, "11.50"),
        ("500.000001", 2, "10.50"),
        ("5000", 2, "105.00"),
        ("5001", 3, "95.02"),
    ],
)
def test_volume_prices_everything_at_the_total_s_tier(quantity: str, tier: int, amount: str) -> None:
    [line] = price(make_card(VOLUME), quantity)
    assert (line.tier, line.quantity, str(line.amount)) == (tier, Decimal(quantity), amount)
    assert line.quantity.as_tuple().exponent == -6
    assert line.description == f"Thing (tier {tier})"


@pytest.mark.parametrize(
    ("quantity", "packages", "amount"),
    [
        ("0", "0", "0.00"),  # package lines count whole packages: no decimal places
        ("0.000001", "1", "5.00"),
        ("100", "1", "5.00"),
        ("100.5", "2", "10.00"),
        ("250", "3", "15.00"),
    ],
)
def test_package_charges_every_started_package(quantity: str, packages: str, amount: str) -> None:
    [line] = price(make_card(PACKAGE), quantity)
    assert (str(line.quantity), line.unit, str(line.unit_price), str(line.amount)) == (
        packages,
        "package of 100 GB",
        "5.00",
        amount,
    )
    assert line.tier is None
    assert line.description == "Thing"


def test_package_size_is_written_plainly() -> None:
    card = make_card({"model": "package", "package_size": "1E+3", "package_price": "1"})
    assert price(card, "1")[0].unit == "package of 1000 GB"
    card = make_card({"model": "package", "package_size": "0.50", "package_price": "1"})
    [line] = price(card, "1.2")
    assert (line.unit, str(line.quantity)) == ("package of 0.5 GB", "3")


@pytest.mark.parametrize(
    ("rounding", "quantity", "expected"),
    [
        # 0.125 and 0.135 are exact half-cent cases: half-even goes to the even cent, half-up away.
        ("half_even", "12.5", "0.12"),
        ("half_up", "12.5", "0.13"),
        ("half_even", "13.5", "0.14"),
        ("half_up", "13.5", "0.14"),
        ("half_even", "12.6", "0.13"),
    ],
)
def test_line_rounding_follows_the_card(rounding: str, quantity: str, expected: str) -> None:
    card = make_card({"model": "per_unit", "unit_price": "0.01"}, rounding=rounding)
    assert str(price(card, quantity)[0].amount) == expected


def test_rounding_is_per_line_not_per_invoice() -> None:
    card = make_card(GRADUATED)
    # 1000.05 → tier 2 holds 0.05 units at 0.080 = 0.004, rounded to 0.00 on its own line.
    assert [str(line.amount) for line in price(card, "1000.05")] == ["100.00", "0.00"]


@pytest.mark.parametrize(("quantity", "expected"), [("10", "25"), ("11", "28"), ("1", "2"), ("3", "8")])
def test_currency_without_minor_units(quantity: str, expected: str) -> None:
    card = make_card({"model": "per_unit", "unit_price": "2.5"}, currency="JPY", minor_units=0)
    assert card.minor_unit == Decimal(1)
    [line] = price(card, quantity)
    assert str(line.amount) == expected  # 25, 27.5 → 28, 2.5 → 2, 7.5 → 8 (half-even)


def test_quantities_are_exact_decimals() -> None:
    [line] = price(make_card({"model": "per_unit", "unit_price": "0.1"}), "0.3")
    assert isinstance(line.quantity, Decimal)
    assert (line.quantity, line.amount) == (Decimal("0.3"), Decimal("0.03"))
    assert '"quantity":"0.300000"' in line.model_dump_json()


def test_products_are_exact_beyond_the_default_decimal_precision() -> None:
    # The exact product is 20000000000000000000.00500000002...: just above half a cent. The default
    # 28-digit context would round it to exactly half a cent first, and half-even would then go down.
    card = make_card({"model": "per_unit", "unit_price": "0.01000000000000000000000000000001"})
    [line] = price(card, "2000000000000000000000.5")
    assert str(line.amount) == "20000000000000000000.01"


def test_negative_quantity_and_wrong_unit_raise() -> None:
    card = make_card({"model": "per_unit", "unit_price": "1"})
    item = card.items["thing"]
    with pytest.raises(ValueError, match="negative"):
        price_usage(BillableUsage("acme", "thing", Decimal(-1), "GB"), "thing", item, card)
    with pytest.raises(ValueError, match="'byte'"):
        price_usage(BillableUsage("acme", "thing", Decimal(1), "byte"), "thing", item, card)
