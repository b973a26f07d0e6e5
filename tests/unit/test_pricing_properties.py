"""Properties of pricing and invoices that must hold for every card and every quantity."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from accounting.core.invoices import InvoiceBatch, build_invoices
from accounting.core.pricing import price_usage
from accounting.core.rate_card import Graduated, Item, Package, RateCard
from accounting.core.usage import QUANTITY_PLACES, BillableUsage
from contracts import Period, report_id

PERIOD = Period.month("2026-10")

quantities = st.decimals(min_value=0, max_value=10**7, places=6, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
bounds = st.lists(
    st.decimals(
        min_value=Decimal("0.000001"), max_value=10**7, places=6, allow_nan=False, allow_infinity=False
    ),
    unique=True,
    max_size=4,
).map(sorted)


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, str]]:
    ups = draw(bounds)
    tier_prices = draw(st.lists(prices, min_size=len(ups) + 1, max_size=len(ups) + 1))
    return [
        {"unit_price": str(price), **({"up_to": str(up)} if index < len(ups) else {})}
        for index, (up, price) in enumerate(zip([*ups, None], tier_prices, strict=True))
    ]


per_unit = st.builds(lambda price: {"model": "per_unit", "unit_price": str(price)}, prices)
graduated = st.builds(lambda t: {"model": "graduated", "tiers": t}, tiers())
volume = st.builds(lambda t: {"model": "volume", "tiers": t}, tiers())
package = st.builds(
    lambda size, price: {"model": "package", "package_size": str(size), "package_price": str(price)},
    st.decimals(min_value=Decimal("0.001"), max_value=10**4, places=3, allow_nan=False, allow_infinity=False),
    prices,
)
price_models = st.one_of(per_unit, graduated, volume, package)


# Currencies of 0, 2 and 3 minor units; a card's minor_units are its currency's.
currencies = st.sampled_from(["JPY", "EUR", "BHD"])


def make_card(
    items: dict[str, dict[str, Any]], currency: str = "EUR", rounding: str = "half_even"
) -> RateCard:
    return RateCard.model_validate(
        {
            "currency": currency,
            "rounding": rounding,
            "items": {
                key: {"description": key.title(), "unit": "GB", "price": price}
                for key, price in items.items()
            },
        }
    )


cards = st.builds(
    make_card,
    st.dictionaries(st.sampled_from(["a", "b", "c"]), price_models, min_size=1),
    currencies,
    st.sampled_from(["half_even", "half_up"]),
)


def usage_of(quantity: Decimal, item: str = "a") -> BillableUsage:
    return BillableUsage(account_id="acme", item=item, quantity=quantity, unit="GB")


accounts_usage = st.lists(
    st.tuples(st.sampled_from(["x", "y", "w"]), st.integers(0, 2), quantities), max_size=6
)


@given(cards, accounts_usage)
def test_invoice_total_is_the_sum_of_its_rounded_lines(
    card: RateCard, drawn: list[tuple[str, int, Decimal]]
) -> None:
    keys = sorted(card.items)
    entries = [
        BillableUsage(account_id=account, item=keys[index % len(keys)], quantity=quantity, unit="GB")
        for account, index, quantity in drawn
    ]
    result = build_invoices(
        report_id=report_id(PERIOD.period_id, 1),
        revision=1,
        period=PERIOD,
        accounts=["x", "y", "z"],
        usage=entries,
        card=card,
    )
    assert isinstance(result, InvoiceBatch)
    expected = {"x", "y", "z"} | {entry.account_id for entry in entries}
    assert [invoice.account_id for invoice in result.invoices] == sorted(expected)
    for invoice in result.invoices:
        assert all(line.amount == card.round_money(line.amount) for line in invoice.lines)
        assert invoice.subtotal == sum((line.amount for line in invoice.lines), Decimal(0))
        assert invoice.total == invoice.subtotal
        assert invoice.total.as_tuple().exponent == -card.minor_units
    assert result.total == sum((invoice.total for invoice in result.invoices), Decimal(0))


@given(cards, quantities)
def test_each_line_is_within_half_a_minor_unit_of_the_exact_amount(card: RateCard, quantity: Decimal) -> None:
    for key, item in card.items.items():
        for line in price_usage(usage_of(quantity, key), key, item, card):
            exact = Fraction(line.quantity) * Fraction(line.unit_price)
            assert abs(Fraction(line.amount) - exact) <= Fraction(card.minor_unit) / 2
            assert line.amount.as_tuple().exponent == -card.minor_units


@given(cards, quantities)
def test_every_line_but_a_package_s_has_exactly_the_quantity_places(
    card: RateCard, quantity: Decimal
) -> None:
    for key, item in card.items.items():
        lines = price_usage(usage_of(quantity, key), key, item, card)
        exponents = {line.quantity.as_tuple().exponent for line in lines}
        if isinstance(item.price, Package):
            [line] = lines
            assert line.quantity == line.quantity.to_integral_value()  # a count of packages
        else:
            assert exponents == {QUANTITY_PLACES.as_tuple().exponent}
            assert sum((line.quantity for line in lines), Decimal(0)) == quantity


@given(tiers(), quantities)
def test_graduated_tiers_split_the_quantity_exactly(
    drawn_tiers: list[dict[str, str]], quantity: Decimal
) -> None:
    card = make_card({"a": {"model": "graduated", "tiers": drawn_tiers}})
    item = card.items["a"]
    assert isinstance(item.price, Graduated)
    lines = price_usage(usage_of(quantity), "a", item, card)
    assert sum((line.quantity for line in lines), Decimal(0)) == quantity
    numbers = [line.tier for line in lines]
    # Tiers fill from the bottom: no tier skipped below the last one used, none used twice.
    assert numbers == list(range(1, len(lines) + 1))
    lower = Decimal(0)
    for line, tier in zip(lines, item.price.tiers, strict=False):
        assert line.unit_price == tier.unit_price
        assert line.quantity >= 0
        if tier.up_to is not None:
            assert line.quantity <= tier.up_to - lower
            if line is not lines[-1]:
                assert line.quantity == tier.up_to - lower  # only the last tier used may be partial
            lower = tier.up_to


@given(prices, quantities, currencies, st.sampled_from(["half_even", "half_up"]))
def test_single_unbounded_tier_equals_per_unit(
    price: Decimal, quantity: Decimal, currency: str, rounding: str
) -> None:
    tier = [{"unit_price": str(price)}]
    card = make_card(
        {
            "a": {"model": "per_unit", "unit_price": str(price)},
            "b": {"model": "graduated", "tiers": tier},
            "c": {"model": "volume", "tiers": tier},
        },
        currency,
        rounding,
    )

    def amounts(key: str) -> list[tuple[Decimal, Decimal]]:
        item: Item = card.items[key]
        return [
            (line.quantity, line.amount) for line in price_usage(usage_of(quantity, key), key, item, card)
        ]

    assert amounts("a") == amounts("b") == amounts("c")


@given(
    st.decimals(min_value=Decimal("0.001"), max_value=10**4, places=3, allow_nan=False, allow_infinity=False),
    quantities,
)
def test_package_count_is_the_ceiling(size: Decimal, quantity: Decimal) -> None:
    card = make_card({"a": {"model": "package", "package_size": str(size), "package_price": "1"}})
    [line] = price_usage(usage_of(quantity), "a", card.items["a"], card)
    packages = line.quantity
    assert packages == packages.to_integral_value()
    assert packages * size >= quantity
    assert (packages - 1) * size < quantity or packages == 0


# Quantities at the contract's bounds (30 digits before the point; BillableUsage keeps 6 after):
# their amounts need more than the 28 digits of Python's default decimal context.
huge_quantities = st.decimals(
    min_value=Decimal(10) ** 25,
    max_value=Decimal(10) ** 30 - 1,
    places=6,
    allow_nan=False,
    allow_infinity=False,
)


def invoiced_at_the_bounds(entries: list[BillableUsage]) -> InvoiceBatch:
    card = make_card({key: {"model": "per_unit", "unit_price": "0.0230"} for key in ("a", "b", "c")})
    first = report_id(PERIOD.period_id, 1)
    result = build_invoices(report_id=first, revision=1, period=PERIOD, accounts=[], usage=entries, card=card)
    assert isinstance(result, InvoiceBatch)
    return result


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), huge_quantities), min_size=1, max_size=6),
    st.lists(st.sampled_from(["x", "y"]), min_size=6, max_size=6),
)
def test_sums_at_the_contracts_bounds_are_exact(
    drawn: list[tuple[str, Decimal]], accounts: list[str]
) -> None:
    entries = [
        BillableUsage(account_id=account, item=item, quantity=quantity, unit="GB")
        for (item, quantity), account in zip(drawn, accounts, strict=False)
    ]
    result = invoiced_at_the_bounds(entries)
    for invoice in result.invoices:
        owed = {key: Fraction(0) for key in "abc"}
        for entry in entries:
            if entry.account_id == invoice.account_id:
                owed[entry.item] += Fraction(entry.quantity)
        exact_lines = [Fraction(line.amount) for line in invoice.lines]
        assert Fraction(invoice.subtotal) == sum(exact_lines)
        for line in invoice.lines:
            assert Fraction(line.quantity) == owed[line.item]
    assert Fraction(result.total) == sum(Fraction(invoice.total) for invoice in result.invoices)


def test_an_invoice_near_3e26_is_the_exact_sum_of_its_lines() -> None:
    """The case found: summed in the default 28-digit context it came out 0.04 off its lines."""
    quantity = Decimal("4347826086956521739130434782.608696")  # at 0.0230 each line is about 1e26
    entries = [BillableUsage(account_id="acme", item=item, quantity=quantity, unit="GB") for item in "abc"]
    result = invoiced_at_the_bounds(entries)
    [invoice] = result.invoices
    assert Fraction(invoice.total) == sum(Fraction(line.amount) for line in invoice.lines)
    assert invoice.total > Decimal("2.9e26")
