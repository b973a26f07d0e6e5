"""The rate card: what each billable unit costs, in which currency, rounded how.

Pure data parsed from a TOML *string*; reading the file is the caller's business. Every model
forbids unknown keys, so a typo in the card fails loudly instead of being ignored. Money and
quantities are exact ``Decimal``: in TOML they are written as strings (``"0.0320"``), and a TOML
float is refused because it has already lost exactness by the time it is parsed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from functools import cache
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts import DecimalString

Rounding = Literal["half_even", "half_up"]
ByteBase = Literal["decimal", "binary"]

_ROUNDING_MODES: Mapping[Rounding, str] = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP}


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    # "-0" would otherwise print as "-0.00" on an invoice.
    return value.copy_abs() if value == 0 else value


def _currency_code(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha() or not value.isupper():
        raise ValueError(f"must be an ISO 4217 code of 3 uppercase letters such as 'EUR', got {value!r}")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


Price = Annotated[DecimalString, AfterValidator(_non_negative)]
"""A non-negative exact amount of money per unit."""

PositiveDecimal = Annotated[DecimalString, AfterValidator(_positive)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Strict):
    """One tier: units up to and including ``up_to`` (``None``: unbounded, last tier only)."""

    up_to: PositiveDecimal | None = None
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
    """Currency, rounding rule and the price of every billable item."""

    currency: Annotated[str, AfterValidator(_currency_code)]
    minor_units: int = Field(ge=0, le=4, strict=True)
    rounding: Rounding = "half_even"
    byte_base: ByteBase = "decimal"
    items: dict[Annotated[str, Field(min_length=1, max_length=64)], Item] = Field(min_length=1)

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
