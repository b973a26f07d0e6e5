"""How a document writes money and dates for its reader (babel, CLDR), and exact decimals.

Money is written for the currency and the locale (``€1,234.50``, ``1.234,50 €``, ``¥33``) without
ever rounding: an amount is stored rounded to the currency's ISO minor unit, and babel is told
to keep every digit it has (CLDR and ISO disagree on a few currencies' digits; padding is all it
may add). Quantities and unit prices are printed exactly as stored.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal

from babel.dates import format_date
from babel.numbers import format_currency


def amount(value: Decimal) -> str:
    """A stored decimal exactly as stored: every digit kept, never an exponent, never a float."""
    return format(value, "f")


def money(value: Decimal, currency: str, locale: str = "en") -> str:
    return format_currency(value, currency, locale=locale, currency_digits=True, decimal_quantization=False)


def day(value: datetime, zone: tzinfo, locale: str = "en") -> str:
    """The calendar day of ``value`` in ``zone``, written for the locale (``December 7, 2026``)."""
    return format_date(value.astimezone(zone).date(), format="long", locale=locale)


def moment(value: datetime) -> str:
    """A UTC datetime as ``2026-10-01 00:00:00 UTC`` (microseconds only when there are some)."""
    return f"{value.isoformat(sep=' ').removesuffix('+00:00')} UTC"
