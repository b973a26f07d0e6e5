"""Field types shared by every message: decimal strings, UTC datetimes, schema versions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, PlainSerializer, PlainValidator, WithJsonSchema

SCHEMA_VERSION = "1.1"
"""The version of every message type that has not had a major change of its own."""
SUPPORTED_MAJOR = 1


def _parse_decimal(value: Any) -> Decimal:
    # One plain validator, checked in the order that is cheapest for the common case (a string):
    # a reply carries hundreds of thousands of these, so this is on the coordinator's hot path.
    kind = type(value)
    if kind is str or kind is int or kind is Decimal:
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    elif isinstance(value, (bool, float)):
        # Floats are refused outright: 0.1 as a float is not 0.1, and money must be exact.
        raise ValueError("must be a decimal string such as '12.50', not a float")
    elif isinstance(value, (str, int, Decimal)):  # a subclass, rare: take its plain value
        return _parse_decimal(Decimal(value) if isinstance(value, Decimal) else str(value))
    else:
        raise ValueError(f"must be a decimal string, got {kind.__name__}")
    if not parsed.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return parsed


QUANTITY_INTEGER_DIGITS = 30
QUANTITY_FRACTION_DIGITS = 18
QUANTITY_TEXT_LENGTH = 64


_PLAIN_QUANTITY = re.compile(
    rf"[0-9]{{1,{QUANTITY_INTEGER_DIGITS}}}(?:\.[0-9]{{1,{QUANTITY_FRACTION_DIGITS}}})?"
)
"""A quantity in plain notation within the bounds: what every service sends, in practice."""


def _parse_non_negative(value: Any) -> Decimal:
    """A quantity: a decimal ≥ 0 with at most 30 digits before the point and 18 after.

    Checked before any arithmetic: a string longer than 64 characters, or a number such as
    ``1e999999999``, is refused at once instead of costing seconds (or an ``Overflow``) later.
    A string in plain notation within the bounds needs no more checks than its pattern: the
    common case, and the hot path of a gather (``Decimal.as_tuple`` alone cost a tenth of the
    coordinator's time at 100,000 accounts).
    """
    if type(value) is str and _PLAIN_QUANTITY.fullmatch(value):
        return Decimal(value)
    if isinstance(value, str) and len(value) > QUANTITY_TEXT_LENGTH:
        raise ValueError(f"{value[:20]!r}... is longer than {QUANTITY_TEXT_LENGTH} characters")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**QUANTITY_INTEGER_DIGITS:
        raise ValueError(f"has more than {QUANTITY_INTEGER_DIGITS} digits before the decimal point")
    parsed = _parse_decimal(value)
    if parsed < 0:
        raise ValueError(f"{parsed} is negative")
    if parsed and parsed.adjusted() >= QUANTITY_INTEGER_DIGITS:
        raise ValueError(f"{value!r} has more than {QUANTITY_INTEGER_DIGITS} digits before the decimal point")
    exponent = parsed.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= QUANTITY_INTEGER_DIGITS:  # a zero such as 0E+99
        raise ValueError(f"{value!r} has an exponent above {QUANTITY_INTEGER_DIGITS - 1}")
    if isinstance(exponent, int) and exponent < -QUANTITY_FRACTION_DIGITS:
        raise ValueError(f"{value!r} has more than {QUANTITY_FRACTION_DIGITS} digits after the decimal point")
    return parsed if parsed else abs(parsed)  # "-0" becomes "0"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def check_schema_version(value: Any, supported_major: int = SUPPORTED_MAJOR) -> str:
    """``value`` if it is ``MAJOR.MINOR`` with the major version this reader understands."""
    if not isinstance(value, str):
        raise ValueError("schema_version must be a string such as '1.0'")
    major, _, minor = value.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise ValueError(f"schema_version {value!r} is not MAJOR.MINOR")
    if int(major) != supported_major:
        raise ValueError(
            f"schema_version {value} is not supported: this build reads major version {supported_major}"
        )
    return value


def _quantity_pattern() -> str:
    """The decimal strings within a quantity's bounds, as a regular expression (the published schema's).

    Exactly the strings ``str(Decimal)`` writes for every quantity the model accepts, and only
    quantities the model accepts: plain notation (``0``, ``3600``, ``12.5``, with at most
    ``QUANTITY_INTEGER_DIGITS`` digits before the point, no leading zero, and at most
    ``QUANTITY_FRACTION_DIGITS`` after it) and scientific notation with one digit before the point
    (``1E+29``, ``1.5E-7``), whose exponent keeps it in the same bounds. The model also takes other
    spellings of the same numbers (``007``, ``12e3``, a JSON integer); a writer need not.
    """
    integer = QUANTITY_INTEGER_DIGITS
    fraction = QUANTITY_FRACTION_DIGITS
    plain = rf"(?:0|[1-9][0-9]{{0,{integer - 1}}})(?:\.[0-9]{{1,{fraction}}})?"
    # d.fff…E+k: at most `fraction` digits after the point for any k ≤ 29, and, from k = 10, up to
    # 28 (what str() writes for a number with more significant digits than its exponent).
    positive = rf"[0-9](?:\.[0-9]{{1,{fraction}}})?[eE]\+?(?:[0-9]|[12][0-9])"
    positive_long = rf"[0-9]\.[0-9]{{{fraction + 1},{integer - 2}}}[eE]\+?[12][0-9]"
    # d.fff…E-k: the digits after the point, k of them included, stay within `fraction`.
    negative = [rf"[0-9](?:\.[0-9]{{1,{fraction - k}}})?[eE]-{k}" for k in range(1, fraction)]
    negative.append(rf"[0-9][eE]-{fraction}")
    return "^(?:" + "|".join([plain, positive, positive_long, *negative]) + ")$"


QUANTITY_PATTERN = _quantity_pattern()
"""A quantity as the published schema states it (``UsageRecord.quantity``)."""

DECIMAL_PATTERN = r"^-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
"""An amount of money or a billable quantity as Reckon writes it (``str`` of a finite decimal)."""

_DECIMAL_JSON_SCHEMA = WithJsonSchema(
    {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN, "examples": ["12.50"]}
)
_QUANTITY_JSON_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "format": "decimal",
        "minLength": 1,
        "maxLength": QUANTITY_TEXT_LENGTH,
        "pattern": QUANTITY_PATTERN,
        "examples": ["3600", "1048576.5", "0"],
    }
)

DecimalString = Annotated[
    Decimal, PlainValidator(_parse_decimal), PlainSerializer(str, return_type=str), _DECIMAL_JSON_SCHEMA
]
"""An exact decimal that travels as a JSON string ("12.50")."""

NonNegativeDecimal = Annotated[
    Decimal, PlainValidator(_parse_non_negative), PlainSerializer(str, return_type=str), _QUANTITY_JSON_SCHEMA
]
"""A quantity: a decimal ≥ 0 within the bounds above, written as a JSON string; its published schema is
the string form only (``QUANTITY_PATTERN``), though the model also reads a JSON integer."""

UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC; naive datetimes are rejected."""
