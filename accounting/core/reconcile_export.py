"""Reconciliation traces and totals as CSV rows and JSON-ready data (decimals and fractions as text)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

from accounting.core.exact import fraction_text, plain, rounded, terminating
from accounting.core.reconcile import AccountTrace, Problem
from accounting.core.reconcile_totals import Totals

FACTOR_DIGITS = 24
"""Significant digits of a factor's decimal form when the factor has no finite decimal (1/3600)."""

CONVERTED_PLACES = 12
"""Decimal places of a converted quantity's decimal form when it has no finite decimal (the exact
value is always given too, as a fraction)."""


@lru_cache(maxsize=256)  # a report has a handful of factors
def factor_decimal(value: Fraction) -> str:
    """The factor as a decimal: exact when it has a finite expansion, else ``FACTOR_DIGITS``
    significant digits (``fraction_text`` is the exact value)."""
    exact = terminating(value)
    if exact is not None:
        return plain(exact)
    if value == 0:
        return "0"
    magnitude = len(str(abs(value.numerator))) - len(str(value.denominator))
    if abs(value.numerator) * 10 ** max(-magnitude, 0) < value.denominator * 10 ** max(magnitude, 0):
        magnitude -= 1  # now 10**magnitude <= |value| < 10**(magnitude + 1)
    return plain(rounded(value, max(FACTOR_DIGITS - 1 - magnitude, 0)))


def quantity_decimal(value: Fraction) -> str:
    """A converted quantity as a decimal: exact when short enough, else to ``CONVERTED_PLACES``."""
    exact = terminating(value)
    if exact is not None:
        exponent = exact.as_tuple().exponent
        if isinstance(exponent, int) and -exponent <= CONVERTED_PLACES:
            return plain(exact)
    return plain(rounded(value, CONVERTED_PLACES))


CSV_COLUMNS = (
    "kind",
    "account_id",
    "invoice_id",
    "item",
    "service",
    "metric",
    "unit",
    "records",
    "raw_quantity",
    "factor",
    "factor_decimal",
    "converted_quantity",
    "converted_exact",
    "billable_quantity",
    "billable_unit",
    "price_model",
    "tier",
    "tier_range",
    "line_quantity",
    "line_unit",
    "unit_price",
    "amount",
    "stored_amount",
    "report_total",
    "status",
)
"""The CSV layout: one row per ``kind``, in this order for each account:

- ``source``: one (service, metric, unit) of an item: records, raw quantity, factor, converted
  quantity, and the item's billable quantity;
- ``line``: one priced line of the item (tier, line quantity, unit price, amount, stored amount);
  the ``amount`` of every ``line`` row adds up to the report's total;
- ``invoice``: the account's traced total (``amount``) and its stored invoice's (``stored_amount``);

and after every account ``item`` rows (per item: billable quantity and amount over all accounts;
raw quantities are on ``item-source`` rows) and one ``total`` row (traced, stored and report total).
``status`` is ``ok`` or ``mismatch``.
"""


def _status(problems: Iterable[Problem]) -> str:
    return "mismatch" if any(True for _ in problems) else "ok"


def _text(value: Decimal | int | str | None) -> str:
    if value is None:
        return ""
    return plain(value) if isinstance(value, Decimal) else str(value)


def csv_rows(account: AccountTrace) -> Iterator[dict[str, str]]:
    """The account's ``source``, ``line`` and ``invoice`` rows (see ``CSV_COLUMNS``)."""
    blank = dict.fromkeys(CSV_COLUMNS, "")
    base = {**blank, "account_id": account.account_id, "invoice_id": account.invoice_id or ""}
    for item in account.items:
        item_problems = [p for p in account.problems if p.item == item.item]
        for source in item.sources:
            converted = source.converted
            yield {
                **base,
                "kind": "source",
                "item": item.item,
                "service": source.service,
                "metric": source.metric,
                "unit": source.unit,
                "records": str(source.records),
                "raw_quantity": _text(source.raw_quantity),
                "factor": fraction_text(source.factor),
                "factor_decimal": factor_decimal(source.factor),
                "converted_quantity": quantity_decimal(converted),
                "converted_exact": fraction_text(converted),
                "billable_quantity": _text(item.billable_quantity),
                "billable_unit": item.billable_unit,
                "status": _status(item_problems),
            }
        for line in item.lines:
            yield {
                **base,
                "kind": "line",
                "item": item.item,
                "metric": item.item,
                "billable_quantity": _text(item.billable_quantity),
                "billable_unit": item.billable_unit,
                "price_model": item.price_model,
                "tier": _text(line.tier),
                "tier_range": line.tier_range or "",
                "line_quantity": _text(line.quantity),
                "line_unit": line.unit,
                "unit_price": _text(line.unit_price),
                "amount": _text(line.amount),
                "stored_amount": _text(line.stored_amount),
                "status": _status(p for p in item_problems if p.tier == line.tier),
            }
    yield {
        **base,
        "kind": "invoice",
        "records": str(account.records),
        "amount": _text(account.total),
        "stored_amount": _text(account.stored_total),
        "status": _status(account.problems),
    }


def total_csv_rows(totals: Totals) -> Iterator[dict[str, str]]:
    """The ``item``, ``item-source`` and ``total`` rows that end the CSV."""
    blank = dict.fromkeys(CSV_COLUMNS, "")
    for item in totals.items:
        for service, unit, raw in item.raw:
            yield {
                **blank,
                "kind": "item-source",
                "item": item.item,
                "service": service,
                "metric": item.item,
                "unit": unit,
                "raw_quantity": _text(raw),
            }
        yield {
            **blank,
            "kind": "item",
            "item": item.item,
            "metric": item.item,
            "records": "",
            "billable_quantity": _text(item.billable_quantity),
            "billable_unit": item.billable_unit,
            "amount": _text(item.amount),
        }
    yield {
        **blank,
        "kind": "total",
        "records": str(totals.records),
        "amount": _text(totals.total),
        "stored_amount": _text(totals.stored_total),
        "report_total": _text(totals.report_total),
        "status": "ok" if totals.ok else "mismatch",
    }


def account_json(account: AccountTrace) -> dict[str, Any]:
    """The account's trace as JSON-ready data (decimals and fractions as strings)."""
    return {
        "account_id": account.account_id,
        "invoice_id": account.invoice_id,
        "supersedes": account.supersedes,
        "records": account.records,
        "items": [
            {
                "item": item.item,
                "description": item.description,
                "price_model": item.price_model,
                "sources": [
                    {
                        "service": source.service,
                        "metric": source.metric,
                        "unit": source.unit,
                        "records": source.records,
                        "raw_quantity": _text(source.raw_quantity),
                        "factor": fraction_text(source.factor),
                        "factor_decimal": factor_decimal(source.factor),
                        "converted_quantity": quantity_decimal(source.converted),
                        "converted_exact": fraction_text(source.converted),
                    }
                    for source in item.sources
                ],
                "exact_quantity": fraction_text(item.exact_quantity),
                "billable_quantity": _text(item.billable_quantity),
                "billable_unit": item.billable_unit,
                "lines": [
                    {
                        "tier": line.tier,
                        "tier_range": line.tier_range,
                        "quantity": _text(line.quantity),
                        "unit": line.unit,
                        "unit_price": _text(line.unit_price),
                        "amount": _text(line.amount),
                        "stored_amount": None if line.stored_amount is None else _text(line.stored_amount),
                    }
                    for line in item.lines
                ],
                "amount": _text(item.amount),
            }
            for item in account.items
        ],
        "total": _text(account.total),
        "stored_total": None if account.stored_total is None else _text(account.stored_total),
        "problems": [problem.as_json() for problem in account.problems],
    }


def totals_json(totals: Totals) -> dict[str, Any]:
    return {
        "currency": totals.currency,
        "accounts": totals.accounts,
        "records": totals.records,
        "invoices": totals.invoices,
        "items": [
            {
                "item": item.item,
                "description": item.description,
                "accounts": item.accounts,
                "raw": [
                    {"service": service, "unit": unit, "quantity": _text(raw)}
                    for service, unit, raw in item.raw
                ],
                "billable_quantity": _text(item.billable_quantity),
                "billable_unit": item.billable_unit,
                "amount": _text(item.amount),
            }
            for item in totals.items
        ],
        "total": _text(totals.total),
        "stored_total": _text(totals.stored_total),
        "report_total": None if totals.report_total is None else _text(totals.report_total),
        "ok": totals.ok,
        "problem_count": totals.problem_count,
        "problems": [problem.as_json() for problem in totals.problems],
    }
