"""Field types shared by every message: decimal strings, UTC datetimes, schema versions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, PlainSerializer, WithJsonSchema

SCHEMA_VERSION = "1.1"
SUPPORTED_MAJOR = 1


def _parse_decimal(value: Any) -> Decimal:
    # Floats are refused outright: 0.1 as a float is not 0.1, and money must be exact.
    if isinstance(value, (bool, float)):
        raise ValueError("must be a decimal string such as '12.50', not a float")
    if isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, (str, int)):
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        raise ValueError(f"must be a decimal string, got {type(value).__name__}")
    if not parsed.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return parsed


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"{value} is negative")
    return abs(value)  # "-0" becomes "0"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _check_schema_version(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("schema_version must be a string such as '1.0'")
    major, _, minor = value.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise ValueError(f"schema_version {value!r} is not MAJOR.MINOR")
    if int(major) != SUPPORTED_MAJOR:
        raise ValueError(
            f"schema_version {value} is not supported: this build reads major version {SUPPORTED_MAJOR}"
        )
    return value


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_parse_decimal),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "decimal", "examples": ["12.50"]}),
]
"""An exact decimal that travels as a JSON string ("12.50")."""

NonNegativeDecimal = Annotated[DecimalString, AfterValidator(_non_negative)]

UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC; naive datetimes are rejected."""

SchemaVersion = Annotated[str, BeforeValidator(_check_schema_version)]
