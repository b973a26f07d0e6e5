"""What a reviewer looks at first before approving a period: how it differs from the one before.

Pure: fed each account's current invoice of the two periods (in any order, one at a time, so a
period of a million accounts is never held whole), it keeps per-account totals and per-item sums
and reports the accounts new and gone, the change of every item and of the total, and the
largest movers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from accounting.core.exact import exact_add, exact_sum
from contracts import InvoiceIssued

Side = Literal["before", "now"]


@dataclass(frozen=True)
class Change:
    name: str
    before: Decimal
    now: Decimal

    @property
    def change(self) -> Decimal:
        return exact_add(self.now, -self.before)

    @property
    def percent(self) -> Decimal | None:
        """The change in percent of ``before`` (None when there was nothing before)."""
        if self.before == 0:
            return None
        return (self.change * 100 / self.before).quantize(Decimal("0.1"))


@dataclass(frozen=True)
class PeriodDiff:
    currency: str | None
    accounts_before: int
    accounts_now: int
    new_accounts: tuple[str, ...]
    """Accounts invoiced now and not before (at most ``listed``; ``new_count`` counts them all)."""
    new_count: int
    gone_accounts: tuple[str, ...]
    gone_count: int
    total: Change
    items: tuple[Change, ...]
    movers: tuple[Change, ...]
    """The accounts whose total changed most (by absolute amount), largest first."""
    currencies: tuple[str, ...]
    """Every currency seen, the most used first; more than one means the totals mix currencies."""


@dataclass
class DiffBuilder:
    """Feed ``add(side, invoice)``; ``result()`` once both periods were read."""

    listed: int = 20
    movers: int = 10
    _totals: dict[Side, dict[str, Decimal]] = field(default_factory=lambda: {"before": {}, "now": {}})
    _items: dict[Side, dict[str, Decimal]] = field(default_factory=lambda: {"before": {}, "now": {}})
    _currencies: dict[str, int] = field(default_factory=dict)

    def add(self, side: Side, invoice: InvoiceIssued) -> None:
        self._currencies[invoice.currency] = self._currencies.get(invoice.currency, 0) + 1
        self._totals[side][invoice.account_id] = invoice.total
        items = self._items[side]
        for line in invoice.lines:
            items[line.item] = exact_add(items.get(line.item, Decimal(0)), line.amount)

    def add_all(self, side: Side, invoices: Iterable[InvoiceIssued]) -> None:
        for invoice in invoices:
            self.add(side, invoice)

    def result(self) -> PeriodDiff:
        before, now = self._totals["before"], self._totals["now"]
        new = sorted(now.keys() - before.keys())
        gone = sorted(before.keys() - now.keys())
        changes = (
            Change(account, before.get(account, Decimal(0)), now.get(account, Decimal(0)))
            for account in before.keys() | now.keys()
        )
        movers = heapq.nlargest(
            self.movers, (c for c in changes if c.change != 0), key=lambda c: (abs(c.change), c.name)
        )
        items_before, items_now = self._items["before"], self._items["now"]
        items = tuple(
            Change(item, items_before.get(item, Decimal(0)), items_now.get(item, Decimal(0)))
            for item in sorted(items_before.keys() | items_now.keys())
        )
        currencies = tuple(sorted(self._currencies, key=lambda code: -self._currencies[code]))
        return PeriodDiff(
            currency=currencies[0] if currencies else None,
            accounts_before=len(before),
            accounts_now=len(now),
            new_accounts=tuple(new[: self.listed]),
            new_count=len(new),
            gone_accounts=tuple(gone[: self.listed]),
            gone_count=len(gone),
            total=Change("total", exact_sum(before.values()), exact_sum(now.values())),
            items=items,
            movers=tuple(movers),
            currencies=currencies,
        )
