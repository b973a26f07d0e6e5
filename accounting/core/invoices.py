"""The invoice builder: priced usage → one ``InvoiceIssued`` per account, or the reasons it cannot be."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from accounting.core.exact import exact_add, exact_sum
from accounting.core.pricing import price_usage
from accounting.core.rate_card import RateCard
from accounting.core.usage import BillableUsage
from contracts import AbortCode, AbortReason, InvoiceIssued, InvoiceLine, Period, invoice_id


@dataclass(frozen=True)
class InvoiceBatch:
    """Every invoice of one report revision, sorted by account, and their grand total."""

    invoices: tuple[InvoiceIssued, ...]
    currency: str
    total: Decimal


def build_invoices(
    *,
    report_id: UUID,
    revision: int,
    period: Period,
    accounts: Iterable[str],
    usage: Iterable[BillableUsage],
    card: RateCard,
) -> InvoiceBatch | tuple[AbortReason, ...]:
    """Price all usage and build exactly one invoice per account, or return every reason it cannot.

    ``accounts`` (from the services' inventories) get an invoice even without usage; accounts that
    only appear in ``usage`` are invoiced too. Usage of an item missing from the card, or in another
    unit than the card's, is UNPRICED: all such reasons are returned (one per item) and nothing is
    priced. Several usages of the same account and item are priced on their exact sum.
    """
    totals: dict[tuple[str, str], Decimal] = {}
    units: dict[tuple[str, str], str] = {}
    unpriced_users: dict[str, set[str]] = defaultdict(set)
    wrong_units: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    everyone = set(accounts)
    for entry in usage:
        everyone.add(entry.account_id)
        item = card.items.get(entry.item)
        if item is None:
            unpriced_users[entry.item].add(entry.account_id)
            continue
        if entry.unit != item.unit:
            wrong_units[entry.item][entry.unit].add(entry.account_id)
            continue
        key = (entry.account_id, entry.item)
        totals[key] = exact_add(totals.get(key, Decimal(0)), entry.quantity)
        units[key] = entry.unit

    reasons = _unpriced_reasons(unpriced_users, wrong_units, card)
    if reasons:
        return reasons

    usage_by_account: dict[str, list[BillableUsage]] = defaultdict(list)
    for (account, item_key), quantity in totals.items():
        usage_by_account[account].append(
            BillableUsage(account_id=account, item=item_key, quantity=quantity, unit=units[account, item_key])
        )
    fingerprint = card.fingerprint
    priced = (
        invoice_for(
            account,
            usage_by_account.get(account, ()),
            report_id=report_id,
            revision=revision,
            period=period,
            card=card,
            fingerprint=fingerprint,
        )
        for account in sorted(everyone)
    )
    invoices = tuple(invoice for invoice in priced if issued(invoice, card))
    total = card.round_money(exact_sum(invoice.total for invoice in invoices))
    return InvoiceBatch(invoices=invoices, currency=card.currency, total=total)


def issued(invoice: InvoiceIssued, card: RateCard) -> bool:
    """The card's ``zero_total`` policy: ``skip`` issues no invoice whose total is zero, unless it
    corrects one (the account must learn that it owes nothing now)."""
    return card.zero_total == "issue" or invoice.total != 0 or invoice.supersedes is not None


def invoice_for(
    account: str,
    usage: Iterable[BillableUsage],
    *,
    report_id: UUID,
    revision: int,
    period: Period,
    card: RateCard,
    supersedes: UUID | None = None,
    fingerprint: str | None = None,
    issued_id: UUID | None = None,
) -> InvoiceIssued:
    """One account's invoice: a line per priced tier of each item, sorted by item and tier.
    ``issued_id`` is its id when not the revision's usual one (a preview's).

    Every usage must be of an item on the card, in the card's unit (``build_invoices`` checks).
    """
    lines: list[InvoiceLine] = []
    for entry in usage:
        lines.extend(price_usage(entry, entry.item, card.items[entry.item], card))
    lines.sort(key=lambda line: (line.item, line.tier or 0))
    # Summed exactly (the default context's 28 digits are fewer than an amount may have); amounts
    # are already rounded, so round_money only gives "0.00" its places.
    subtotal = card.round_money(exact_sum(line.amount for line in lines))
    return InvoiceIssued(
        invoice_id=issued_id or invoice_id(account, period.period_id, revision),
        report_id=report_id,
        revision=revision,
        account_id=account,
        period=period,
        currency=card.currency,
        lines=tuple(lines),
        subtotal=subtotal,
        total=subtotal,
        supersedes=supersedes,
        rate_card=fingerprint or card.fingerprint,
    )


def _unpriced_reasons(
    unpriced_users: dict[str, set[str]], wrong_units: dict[str, dict[str, set[str]]], card: RateCard
) -> tuple[AbortReason, ...]:
    reasons: list[tuple[str, AbortReason]] = []
    for item_key, users in unpriced_users.items():
        message = f"item {item_key!r} is not on the rate card (used by {_accounts(len(users))})"
        reasons.append((item_key, AbortReason(code=AbortCode.UNPRICED, message=message)))
    for item_key, by_unit in wrong_units.items():
        used = ", ".join(f"{unit!r} by {_accounts(len(users))}" for unit, users in sorted(by_unit.items()))
        message = f"item {item_key!r} is priced per {card.items[item_key].unit!r} but usage is in {used}"
        reasons.append((item_key, AbortReason(code=AbortCode.UNPRICED, message=message)))
    return tuple(reason for _, reason in sorted(reasons, key=lambda pair: pair[0]))


def _accounts(count: int) -> str:
    return f"{count} account" if count == 1 else f"{count} accounts"
