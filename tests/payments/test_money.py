"""The reference payment consumer sums balances exactly, at any size the contract allows (the
default decimal context keeps 28 digits and would round a balance near 3e26 to the wrong cent)."""

from __future__ import annotations

from decimal import Decimal

from payments.ledger import add_money


def test_a_balance_near_3e26_is_summed_to_the_cent() -> None:
    balance = add_money(Decimal("299999999999999999999999999.99"), Decimal("0.01"))
    assert balance == Decimal("300000000000000000000000000.00")
    assert add_money(balance, Decimal("-0.01")) == Decimal("299999999999999999999999999.99")
