"""Billable usage: what the normalizer hands to pricing."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class BillableUsage:
    """One account's total of one rate-card item, in the item's billable unit.

    ``quantity`` is exact up to ``QUANTITY_PLACES`` decimal places (rounded half-even once,
    after summing exactly): it is the quantity the customer sees on the invoice line.
    """

    account_id: str
    item: str
    quantity: Decimal
    unit: str


QUANTITY_PLACES = Decimal("0.000001")
