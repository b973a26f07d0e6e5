"""Reconciliation: every cent of a completed report traced back to the stored records it came from.

For each account and item: the records of each (service, metric, unit) summed exactly (the raw
quantity), the exact conversion factor to the card's billable unit, the billable quantity rounded
once per account and item, the tier(s), unit prices and amounts, and the invoice total. The
billable quantities and lines are computed by the very functions that priced the invoices
(``Converter.account_usage`` and ``price_usage``, with the rate card stored on the report), then
cross-checked against the stored invoice: any difference is a ``Problem``. The traces are added up
and checked against the report's total in ``reconcile_totals``, and written as CSV and JSON in
``reconcile_export``.

Pure: the shell (``accounting/service/reconcile.py``) reads the records and invoices a page of accounts at a
time and hands each account here. The stored records keep no attributes, so the gross and included
quantities some services report (storage's ``gross_byte_seconds``…) cannot be traced here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from typing import Any

from accounting.core.exact import exact_add, exact_sum, plain
from accounting.core.normalizer import Converter, round_quantity
from accounting.core.pricing import price_usage
from accounting.core.rate_card import Graduated, RateCard, Volume
from contracts import InvoiceIssued, InvoiceLine

UsageRow = tuple[str, str, str, str, str]
"""``(account_id, service, metric, unit, quantity)``, as the store gives them."""


@dataclass(frozen=True)
class Problem:
    """A traced figure that does not match what was stored (or what it must add up to)."""

    account_id: str | None
    item: str | None
    tier: int | None
    what: str
    traced: str | None
    stored: str | None

    @property
    def message(self) -> str:
        where = " ".join(
            part
            for part in (
                self.account_id or "report",
                self.item or "",
                "" if self.tier is None else f"tier {self.tier}",
            )
            if part
        )
        return f"{where}: {self.what} (traced {self.traced or '-'}, stored {self.stored or '-'})"

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "item": self.item,
            "tier": self.tier,
            "what": self.what,
            "traced": self.traced,
            "stored": self.stored,
            "message": self.message,
        }


@dataclass(frozen=True)
class SourceTrace:
    """One (service, metric, unit) of one account: its records' exact sum and conversion."""

    service: str
    metric: str
    unit: str
    """The unit the service reported."""
    records: int
    raw_quantity: Decimal
    """The exact sum of the records' quantities."""
    factor: Fraction
    """Exact factor from ``unit`` to the item's billable unit."""

    @cached_property
    def converted(self) -> Fraction:
        """``raw_quantity * factor``, exact (before the once-per-item rounding)."""
        return Fraction(self.raw_quantity) * self.factor


@dataclass(frozen=True)
class LineTrace:
    """One priced line (one tier, or the one line of a per-unit, volume or package price)."""

    tier: int | None
    tier_range: str | None
    """The quantities the tier covers (``up to 1000``, ``over 1000 up to 10000``, ``over 10000``), None
    without tiers."""
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    stored_amount: Decimal | None
    """The amount of the same line on the stored invoice (None: no such line)."""


@dataclass(frozen=True)
class ItemTrace:
    """One account's usage of one rate-card item, from its sources to its priced lines."""

    item: str
    description: str
    price_model: str
    sources: tuple[SourceTrace, ...]
    exact_quantity: Fraction
    """Sum of the sources' converted quantities, exact."""
    billable_quantity: Decimal
    """``exact_quantity`` rounded once, half-even (what the normalizer gave pricing)."""
    billable_unit: str
    lines: tuple[LineTrace, ...]
    amount: Decimal
    """Exact sum of the lines' (already rounded) amounts."""


@dataclass(frozen=True)
class AccountTrace:
    """One account: its items, its traced invoice total and the stored invoice it is checked against."""

    account_id: str
    items: tuple[ItemTrace, ...]
    records: int
    total: Decimal
    """The invoice total the traced lines give (rounded to the currency as the invoice builder does)."""
    invoice_id: str | None
    stored_total: Decimal | None
    """The stored invoice's total (None: no invoice was issued to the account)."""
    supersedes: str | None
    problems: tuple[Problem, ...]
    stored_revision: int | None = None
    """The revision that issued the stored invoice: the account's current invoice may be of an
    earlier revision than the one reconciled (a correction issues only what changed)."""

    @property
    def issued(self) -> bool:
        return self.invoice_id is not None


def trace_account(
    account_id: str,
    rows: Iterable[UsageRow],
    *,
    converter: Converter,
    card: RateCard,
    stored: InvoiceIssued | None,
) -> AccountTrace:
    """Trace one account's stored records (``rows``, all of this account) to its invoice.

    The billable quantities come from ``converter.account_usage`` and the lines from ``price_usage``
    with ``card`` (the card that priced the report), as ``price_window`` computed them; each line is
    then compared with ``stored`` (the account's stored invoice, or None when none was issued).
    """
    problems: list[Problem] = []
    sums: dict[tuple[str, str, str], Decimal] = {}
    counts: dict[tuple[str, str, str], int] = {}
    convertible: list[tuple[str, str, Decimal]] = []
    for row_account, service, metric, unit, text in rows:
        if row_account != account_id:
            raise ValueError(f"a record of {row_account!r} among the records of {account_id!r}")
        quantity = Decimal(text)
        key = (service, metric, unit)
        sums[key] = exact_add(sums[key], quantity) if key in sums else quantity
        counts[key] = counts.get(key, 0) + 1
        if converter.factor(metric, unit) is not None:
            convertible.append((metric, unit, quantity))
    sources_of: dict[str, list[SourceTrace]] = {}
    for (service, metric, unit), raw in sorted(sums.items()):
        factor = converter.factor(metric, unit)
        if factor is None:
            what = f"{service}'s {unit!r} has no conversion to a billable unit on this rate card"
            problems.append(Problem(account_id, metric, None, what, plain(raw), None))
            continue
        source = SourceTrace(service, metric, unit, counts[service, metric, unit], raw, factor)
        sources_of.setdefault(metric, []).append(source)

    stored_lines = _stored_lines(stored)
    items: list[ItemTrace] = []
    for usage in converter.account_usage(account_id, convertible):
        item = card.items[usage.item]
        sources = tuple(sources_of.get(usage.item, ()))
        exact = sum((source.converted for source in sources), Fraction(0))
        if round_quantity(exact) != usage.quantity:  # the sources do not explain the billable quantity
            what = "billable quantity is not its sources' converted sum rounded once"
            problems.append(
                Problem(account_id, usage.item, None, what, str(round_quantity(exact)), str(usage.quantity))
            )
        priced = price_usage(usage, usage.item, item, card)
        lines = tuple(
            _line_trace(line, card, stored_lines.pop((line.item, line.tier), None)) for line in priced
        )
        for line in priced:
            problems.extend(_line_problems(account_id, line, stored))
        items.append(
            ItemTrace(
                item=usage.item,
                description=item.description,
                price_model=item.price.model,
                sources=sources,
                exact_quantity=exact,
                billable_quantity=usage.quantity,
                billable_unit=usage.unit,
                lines=lines,
                amount=exact_sum(line.amount for line in lines),
            )
        )
    for (item_key, tier), line in sorted(
        stored_lines.items(), key=lambda pair: (pair[0][0], pair[0][1] or 0)
    ):
        problems.append(
            Problem(
                account_id, item_key, tier, "stored line not traced to any record", None, str(line.amount)
            )
        )
    total = card.round_money(exact_sum(item.amount for item in items))
    if stored is None:
        if total != 0:
            problems.append(Problem(account_id, None, None, "no invoice stored", str(total), None))
    else:
        if stored.total != total:
            problems.append(
                Problem(account_id, None, None, "invoice total differs", str(total), str(stored.total))
            )
        if stored.currency != card.currency:
            problems.append(
                Problem(account_id, None, None, "invoice currency differs", card.currency, stored.currency)
            )
    return AccountTrace(
        account_id=account_id,
        items=tuple(items),
        records=sum(counts.values()),
        total=total,
        invoice_id=None if stored is None else str(stored.invoice_id),
        stored_total=None if stored is None else stored.total,
        supersedes=None if stored is None or stored.supersedes is None else str(stored.supersedes),
        problems=tuple(problems),
        stored_revision=None if stored is None else stored.revision,
    )


def _stored_lines(stored: InvoiceIssued | None) -> dict[tuple[str, int | None], InvoiceLine]:
    lines: dict[tuple[str, int | None], InvoiceLine] = {}
    for line in () if stored is None else stored.lines:
        lines[(line.item, line.tier)] = line
    return lines


def _line_trace(line: InvoiceLine, card: RateCard, stored: InvoiceLine | None) -> LineTrace:
    return LineTrace(
        tier=line.tier,
        tier_range=_tier_range(card, line.item, line.tier),
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price,
        amount=line.amount,
        stored_amount=None if stored is None else stored.amount,
    )


def _line_problems(account_id: str, line: InvoiceLine, stored: InvoiceIssued | None) -> Iterator[Problem]:
    """What differs between the traced ``line`` and the same line (item, tier) on ``stored``."""
    if stored is None:
        return  # the invoice as a whole is checked by the caller
    match = next((s for s in stored.lines if (s.item, s.tier) == (line.item, line.tier)), None)
    if match is None:
        yield Problem(
            account_id, line.item, line.tier, "line missing from the stored invoice", str(line.amount), None
        )
        return
    for what, mine, theirs in (
        ("quantity", line.quantity, match.quantity),
        ("unit price", line.unit_price, match.unit_price),
        ("amount", line.amount, match.amount),
    ):
        if mine != theirs:
            yield Problem(account_id, line.item, line.tier, f"{what} differs", str(mine), str(theirs))
    if line.unit != match.unit:
        yield Problem(account_id, line.item, line.tier, "unit differs", line.unit, match.unit)


def _tier_range(card: RateCard, item_key: str, tier: int | None) -> str | None:
    price = card.items[item_key].price
    if tier is None or not isinstance(price, Graduated | Volume):
        return None
    lower = None if tier == 1 else price.tiers[tier - 2].up_to
    upper = price.tiers[tier - 1].up_to
    over = "" if lower is None else f"over {format(lower, 'f')}"
    up_to = "" if upper is None else f"up to {format(upper, 'f')}"
    return " ".join(part for part in (over, up_to) if part) or "all"
