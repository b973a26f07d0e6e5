"""The rate card: what each billable unit costs, in which currency, rounded how.

Pure data parsed from a TOML *string*; reading the file is the caller's business. Every model
forbids unknown keys, so a typo in the card fails loudly instead of being ignored. Money and
quantities are exact ``Decimal``: in TOML they are written as strings (``"0.0320"``), and a TOML
float is refused because it has already lost exactness by the time it is parsed.

The currency must be a current ISO 4217 code (``current_currencies``), and ``minor_units``
defaults to that currency's, both from babel's copy of CLDR's currency data.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from datetime import date
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction
from functools import cache
from typing import Annotated, Any, Literal, Self

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from accounting.core.usage import QUANTITY_PLACES
from contracts import DecimalString

Rounding = Literal["half_even", "half_up"]
ByteBase = Literal["decimal", "binary"]
ZeroTotal = Literal["issue", "skip"]

_ROUNDING_MODES: Mapping[Rounding, str] = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP}


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    # "-0" would otherwise print as "-0.00" on an invoice.
    return value.copy_abs() if value == 0 else value


@cache
def current_currencies() -> frozenset[str]:
    """The ISO 4217 codes a card may use: legal tender in some territory, by babel's CLDR data.

    That is every currency some territory uses with no end date. ``babel.numbers.list_currencies()``
    is not the test: it also knows withdrawn codes (DEM, HRK) that no invoice should carry. Fund,
    metal and test codes (CLF, XAU, XTS, XXX) are not legal tender and are refused too. The answer
    depends only on the installed babel's data, not on today's date, so a stored card that was
    valid reads back valid with the same babel.
    """
    return frozenset(
        detail["currency"]
        for territory in get_global("territory_currencies")
        for detail in get_territory_currencies(territory, date.min, date.max, include_details=True)
        if detail["to"] is None
    )


def iso_minor_units(currency: str) -> int:
    """The currency's minor units (EUR 2, JPY 0, BHD 3), from babel's CLDR currency data.

    CLDR follows ISO 4217 except for a few currencies whose fractions are not used in practice,
    where it records 0 (IQD, RSD, YER…): a card in one of those must say 0.
    """
    return get_currency_precision(currency)


def _currency_code(value: str) -> str:
    if value not in current_currencies():
        raise ValueError(f"{value!r} is not a current ISO 4217 currency code such as 'EUR'")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _quantity_places(value: Decimal) -> Decimal:
    # A bound finer than the invoice's quantities would split them into lines it cannot print.
    if (Fraction(value) / Fraction(QUANTITY_PLACES)).denominator != 1:
        raise ValueError(f"must be a multiple of {QUANTITY_PLACES} (quantities' precision), got {value:f}")
    return value


Price = Annotated[DecimalString, AfterValidator(_non_negative)]
"""A non-negative exact amount of money per unit."""

PositiveDecimal = Annotated[DecimalString, AfterValidator(_positive)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Strict):
    """One tier: units up to and including ``up_to`` (``None``: unbounded, last tier only)."""

    up_to: Annotated[PositiveDecimal, AfterValidator(_quantity_places)] | None = None
    unit_price: Price


def _check_tiers(tiers: list[Tier]) -> list[Tier]:
    for index, tier in enumerate(tiers[:-1]):
        if tier.up_to is None:
            raise ValueError(f"tiers[{index}] has no up_to: only the last tier may be unbounded")
        following = tiers[index + 1].up_to
        if following is not None and following <= tier.up_to:
            raise ValueError(
                f"tiers[{index + 1}].up_to {following} is not above tiers[{index}].up_to {tier.up_to}: "
                "tiers must be strictly ascending"
            )
    last = tiers[-1]
    if last.up_to is not None:
        raise ValueError(
            f"tiers[{len(tiers) - 1}] (the last tier) has up_to {last.up_to}: "
            "the last tier must be unbounded (leave up_to out)"
        )
    return tiers


class PerUnit(_Strict):
    """Every unit at ``unit_price``."""

    model: Literal["per_unit"]
    unit_price: Price


class _Tiered(_Strict):
    @field_validator("tiers", check_fields=False)
    @classmethod
    def _tiers_ascend(cls, tiers: list[Tier]) -> list[Tier]:
        return _check_tiers(tiers)


class Graduated(_Tiered):
    """Each unit priced at the tier it falls in."""

    model: Literal["graduated"]
    tiers: list[Tier] = Field(min_length=1)


class Volume(_Tiered):
    """All units priced at the tier the total falls in."""

    model: Literal["volume"]
    tiers: list[Tier] = Field(min_length=1)


class Package(_Strict):
    """``package_price`` per started package of ``package_size`` units."""

    model: Literal["package"]
    package_size: PositiveDecimal
    package_price: Price


PriceModel = Annotated[PerUnit | Graduated | Volume | Package, Field(discriminator="model")]

_PRICE_MODELS = frozenset({"per_unit", "graduated", "volume", "package"})


class Item(_Strict):
    """One billable item: what it is, the unit it is billed in, and how it is priced."""

    description: str = Field(min_length=1)
    unit: str = Field(min_length=1, max_length=32)
    price: PriceModel


class RateCardError(ValueError):
    """The rate card is not valid; the message names each offending field path, one per line."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RateCard(_Strict):
    """Currency, rounding rule and the price of every billable item.

    ``minor_units`` may be left out of the card: it is then the currency's (``iso_minor_units``);
    stated, it must be that number. After validation it is always set, so a card dumped and read
    back (``model_dump(mode="json")``) is equal to the original and has the same ``fingerprint``.
    ``zero_total`` says what happens to an invoice whose total is zero: ``issue`` it, or ``skip``
    it (the billing code applies it).
    """

    currency: Annotated[str, AfterValidator(_currency_code)]
    minor_units: int = Field(ge=0, le=4, strict=True)
    rounding: Rounding = "half_even"
    byte_base: ByteBase = "decimal"
    zero_total: ZeroTotal = "issue"
    items: dict[Annotated[str, Field(min_length=1, max_length=64)], Item] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_minor_units(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "minor_units" in data:
            return data
        currency = data.get("currency")
        if isinstance(currency, str) and currency in current_currencies():
            return {**data, "minor_units": iso_minor_units(currency)}
        # The card is refused for its currency; 0 only keeps minor_units, which may be left out,
        # from being reported missing as well.
        return {**data, "minor_units": 0}

    @field_validator("minor_units")
    @classmethod
    def _minor_units_of_the_currency(cls, value: int, info: ValidationInfo) -> int:
        currency = info.data.get("currency")  # absent when the currency itself was refused
        if currency is not None and value != (iso := iso_minor_units(currency)):
            raise ValueError(
                f"{currency} has {iso} minor units in ISO 4217 (as CLDR records it), the card says {value}"
            )
        return value

    @classmethod
    def from_toml(cls, text: str) -> Self:
        """Parse and validate a rate card written in TOML; raise ``RateCardError`` naming each bad field."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise RateCardError((f"rate card is not valid TOML: {error}",)) from None
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise RateCardError(tuple(_describe(detail) for detail in error.errors())) from None

    @property
    def minor_unit(self) -> Decimal:
        """The smallest amount of the currency: ``Decimal("0.01")`` for 2 minor units, ``1`` for 0."""
        return _minor_unit(self.minor_units)

    @property
    def fingerprint(self) -> str:
        """``sha256:`` and the hex digest of the card's canonical JSON: equal for two cards that
        price identically (``minor_units`` left out or stated), different when any price changes.
        Not cached (``model_copy`` would carry a stale one): compute it once per batch of invoices."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def billable_units(self) -> dict[str, str]:
        """Item key → the unit it is billed in (what the normalizer converts to)."""
        return {key: item.unit for key, item in self.items.items()}

    def round_money(self, amount: Decimal) -> Decimal:
        """Round ``amount`` to the currency's minor unit with the card's rounding rule."""
        # Enough precision that quantize never fails on a large amount, whatever the caller's context.
        precision = max(28, amount.adjusted() + self.minor_units + 2)
        return amount.quantize(
            _minor_unit(self.minor_units),
            rounding=_ROUNDING_MODES[self.rounding],
            context=_context(precision),
        )


@cache
def _minor_unit(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


@cache
def _context(precision: int) -> Context:
    return Context(prec=precision)


def _describe(detail: Mapping[str, Any]) -> str:
    """One pydantic error as ``field.path: message`` (without the price model's union tag)."""
    loc = list(detail["loc"])
    # A discriminated union puts the tag in the path (items.x.price.per_unit.unit_price); the
    # operator wrote items.x.price.unit_price, so that is the path to show.
    if len(loc) > 3 and loc[0] == "items" and loc[2] == "price" and loc[3] in _PRICE_MODELS:
        del loc[3]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(detail["msg"]).removeprefix("Value error, ")
    if isinstance(detail.get("input"), float) and "not a float" in message:
        message += f' (got TOML float {detail["input"]!r}; write it in quotes, e.g. "{detail["input"]!r}")'
    return f"{path or '(rate card)'}: {message}"
