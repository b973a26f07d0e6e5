"""The rate card: parsing, and every rejection naming the offending field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from accounting.core.rate_card import Graduated, Package, PerUnit, RateCard, RateCardError, Volume

SHIPPED_CARD = Path(__file__).resolve().parents[2] / "config" / "rate-card.toml"

HEADER = 'currency = "EUR"\nminor_units = 2\n'


def card_with(price: str, header: str = HEADER) -> str:
    return f'{header}[items.vcpu]\ndescription = "Compute"\nunit = "vCPU-hour"\nprice = {price}\n'


def rejection(text: str) -> str:
    with pytest.raises(RateCardError) as caught:
        RateCard.from_toml(text)
    return str(caught.value)


def test_shipped_card_parses() -> None:
    card = RateCard.from_toml(SHIPPED_CARD.read_text(encoding="utf-8"))
    assert (card.currency, card.minor_units, card.rounding, card.byte_base) == (
        "EUR",
        2,
        "half_even",
        "decimal",
    )
    assert set(card.items) == {"vcpu", "memory", "block_storage", "object_storage", "egress"}
    assert card.items["vcpu"].price == PerUnit(model="per_unit", unit_price=Decimal("0.0320"))
    block = card.items["block_storage"].price
    assert isinstance(block, Graduated)
    assert [(tier.up_to, tier.unit_price) for tier in block.tiers] == [
        (Decimal(1000), Decimal("0.100")),
        (Decimal(10000), Decimal("0.080")),
        (None, Decimal("0.060")),
    ]
    assert isinstance(card.items["object_storage"].price, Volume)
    egress = card.items["egress"].price
    assert isinstance(egress, Package)
    assert (egress.package_size, egress.package_price) == (Decimal(100), Decimal("5.00"))
    assert card.billable_units["egress"] == "GB"


def test_defaults_and_minor_unit() -> None:
    card = RateCard.from_toml(card_with('{ model = "per_unit", unit_price = "0.04" }'))
    assert card.rounding == "half_even"
    assert card.byte_base == "decimal"
    assert card.minor_unit == Decimal("0.01")
    assert str(card.round_money(Decimal("0.125"))) == "0.12"
    jpy = RateCard.from_toml(
        card_with('{ model = "per_unit", unit_price = "3" }', 'currency = "JPY"\nminor_units = 0\n')
    )
    assert jpy.minor_unit == Decimal(1)
    assert str(jpy.round_money(Decimal("2.5"))) == "2"


def test_round_money_half_up() -> None:
    header = HEADER + 'rounding = "half_up"\n'
    card = RateCard.from_toml(card_with('{ model = "per_unit", unit_price = "0.04" }', header))
    assert str(card.round_money(Decimal("0.125"))) == "0.13"


def test_float_price_is_rejected_with_its_path() -> None:
    message = rejection(card_with('{ model = "per_unit", unit_price = 0.04 }'))
    assert message.startswith("items.vcpu.price.unit_price: must be a decimal string")
    assert "not a float" in message
    assert '"0.04"' in message


def test_float_tier_bound_is_rejected_with_its_path() -> None:
    message = rejection(
        card_with('{ model = "volume", tiers = [{ up_to = 10.5, unit_price = "1" }, { unit_price = "1" }] }')
    )
    assert message.startswith("items.vcpu.price.tiers[0].up_to: must be a decimal string")


def test_descending_tiers_are_rejected() -> None:
    tiers = '[{ up_to = "100", unit_price = "1" }, { up_to = "50", unit_price = "1" }, { unit_price = "1" }]'
    message = rejection(card_with(f'{{ model = "graduated", tiers = {tiers} }}'))
    assert message.startswith("items.vcpu.price.tiers: tiers[1].up_to 50 is not above tiers[0].up_to 100")


def test_equal_tier_bounds_are_rejected() -> None:
    tiers = '[{ up_to = "100", unit_price = "1" }, { up_to = "100", unit_price = "1" }, { unit_price = "1" }]'
    assert "strictly ascending" in rejection(card_with(f'{{ model = "volume", tiers = {tiers} }}'))


def test_bounded_last_tier_is_rejected() -> None:
    tiers = '[{ up_to = "100", unit_price = "1" }, { up_to = "200", unit_price = "1" }]'
    message = rejection(card_with(f'{{ model = "graduated", tiers = {tiers} }}'))
    assert message.startswith("items.vcpu.price.tiers: tiers[1] (the last tier) has up_to 200")
    assert "unbounded" in message


def test_unbounded_middle_tier_is_rejected() -> None:
    tiers = '[{ unit_price = "1" }, { unit_price = "1" }]'
    message = rejection(card_with(f'{{ model = "graduated", tiers = {tiers} }}'))
    assert message.startswith("items.vcpu.price.tiers: tiers[0] has no up_to")


def test_no_tiers_is_rejected() -> None:
    assert rejection(card_with('{ model = "volume", tiers = [] }')).startswith("items.vcpu.price.tiers:")


def test_unknown_model_is_rejected() -> None:
    message = rejection(card_with('{ model = "flat", unit_price = "1" }'))
    assert message.startswith("items.vcpu.price: ")
    assert "'flat'" in message


def test_missing_model_is_rejected() -> None:
    assert rejection(card_with('{ unit_price = "1" }')).startswith("items.vcpu.price: ")


def test_unknown_key_is_rejected() -> None:
    message = rejection(card_with('{ model = "per_unit", unit_price = "1", unit_prize = "2" }'))
    assert message == "items.vcpu.price.unit_prize: Extra inputs are not permitted"
    top = rejection(card_with('{ model = "per_unit", unit_price = "1" }', HEADER + 'roundng = "half_up"\n'))
    assert top == "roundng: Extra inputs are not permitted"


@pytest.mark.parametrize("currency", ['"eur"', '"EURO"', '"E1R"', "978"])
def test_bad_currency_is_rejected(currency: str) -> None:
    header = f"currency = {currency}\nminor_units = 2\n"
    assert rejection(card_with('{ model = "per_unit", unit_price = "1" }', header)).startswith("currency: ")


@pytest.mark.parametrize("minor_units", ["5", "-1", "2.0", '"2"'])
def test_bad_minor_units_are_rejected(minor_units: str) -> None:
    header = f'currency = "EUR"\nminor_units = {minor_units}\n'
    assert rejection(card_with('{ model = "per_unit", unit_price = "1" }', header)).startswith(
        "minor_units: "
    )


def test_bad_rounding_and_byte_base_are_rejected() -> None:
    header = HEADER + 'rounding = "ceiling"\nbyte_base = "octal"\n'
    message = rejection(card_with('{ model = "per_unit", unit_price = "1" }', header))
    assert message.splitlines()[0].startswith("rounding: ")
    assert message.splitlines()[1].startswith("byte_base: ")


def test_negative_price_and_empty_package_are_rejected() -> None:
    assert rejection(card_with('{ model = "per_unit", unit_price = "-0.01" }')).startswith(
        "items.vcpu.price.unit_price: must not be negative"
    )
    message = rejection(card_with('{ model = "package", package_size = "0", package_price = "5" }'))
    assert message.startswith("items.vcpu.price.package_size: must be greater than 0")


def test_every_problem_is_reported() -> None:
    text = card_with('{ model = "per_unit", unit_price = 0.5 }', 'currency = "eur"\nminor_units = 2\n')
    with pytest.raises(RateCardError) as caught:
        RateCard.from_toml(text)
    error = caught.value
    assert [problem.split(":")[0] for problem in error.problems] == [
        "currency",
        "items.vcpu.price.unit_price",
    ]
    assert isinstance(error, ValueError)


def test_invalid_toml_is_a_rate_card_error() -> None:
    assert rejection("currency = ").startswith("rate card is not valid TOML")


def test_missing_fields_are_named() -> None:
    message = rejection('currency = "EUR"\n')
    assert "minor_units: Field required" in message
    assert "items: Field required" in message


def test_integer_prices_are_exact_and_accepted() -> None:
    card = RateCard.from_toml(card_with('{ model = "per_unit", unit_price = 3 }'))
    assert card.items["vcpu"].price == PerUnit(model="per_unit", unit_price=Decimal(3))
