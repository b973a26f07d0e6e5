"""Storage plans: how many bytes an account may keep for free, and from when.

Pure: no I/O. An allowance is a whole number of **bytes**, so it means the same to the coordinator
whether its rate card bills GB as 10^9 or 2^30 bytes: an account holding exactly its allowance for
a whole period reports zero billable byte-seconds, and zero converts to zero in any unit. A plan is
written with its unit, ``"100 GB"`` (10^9 bytes each) or ``"100 GiB"`` (2^30 bytes each); a bare
number has no unit and is refused.

Plans change over time: each one is in effect from its ``effective_from`` until the account's next
one. A billing period is answered with the plan in effect at the period's **start** (a change in the
middle of a period applies from the next one), so replaying an old period gives the allowance it
had then, not today's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, localcontext
from itertools import pairwise
from typing import Final

from contracts import Period

ALWAYS: Final = datetime(1, 1, 1, tzinfo=UTC)
"""The ``effective_from`` of a plan that has no start: in effect for every period until replaced."""

MAX_BYTES: Final = 2**63 - 1
"""SQLite's largest integer: about 9.2 exabytes."""

BYTE_UNITS: Final[Mapping[str, int]] = {
    "B": 1,
    **{f"{prefix}B": 1000**power for power, prefix in enumerate("kMGTPE", start=1)},
    **{f"{prefix}iB": 1024**power for power, prefix in enumerate("KMGTPE", start=1)},
}
"""``kB``, ``MB``, ``GB``… are powers of 1000; ``KiB``, ``MiB``, ``GiB``… powers of 1024."""

_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", re.ASCII)
_EXACT: Final = Context(prec=80, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


def parse_bytes(text: str) -> int:
    """``"100 GB"`` → 100 000 000 000; ``"100 GiB"`` → 107 374 182 400; ``"1.5 kB"`` → 1500.

    Raises ``ValueError`` for a missing or unknown unit, or an amount that is not whole bytes.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an amount with its unit, such as '100 GB' (10^9 bytes each) "
            "or '100 GiB' (2^30 bytes each)"
        )
    number, unit = match.groups()
    factor = BYTE_UNITS.get(unit)
    if factor is None:
        raise ValueError(f"{text!r}: unknown unit {unit!r}, expected one of {', '.join(BYTE_UNITS)}")
    if len(number) > 40:  # far beyond MAX_BYTES, and beyond what _EXACT multiplies exactly
        raise ValueError(f"{text!r} is too large")
    with localcontext(_EXACT):
        amount = Decimal(number) * factor
    if amount != amount.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes ({amount})")
    return int(amount)


def allowance_bytes(value: int | str) -> int:
    """An allowance as given to the store: ``int`` bytes, or text with its unit (``parse_bytes``)."""
    if isinstance(value, str):
        return parse_bytes(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be whole bytes (int) or text with a unit such as '100 GB', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Subscription:
    """An account's plan from ``effective_from`` on: ``included_bytes`` held for a whole billing
    period are free, that is ``included_bytes * the period's seconds`` byte-seconds per period.

    ``effective_from`` must be timezone-aware and is normalised to UTC; invalid values raise
    ``ValueError`` naming the account and the field.
    """

    account_id: str
    included_bytes: int
    effective_from: datetime = ALWAYS

    def __post_init__(self) -> None:
        if not isinstance(self.account_id, str) or not self.account_id.strip():
            raise ValueError(f"subscription: account_id must be a non-empty string, got {self.account_id!r}")
        if len(self.account_id) > 128:
            raise ValueError("subscription: account_id is longer than 128 characters")
        where = f"subscription of account {self.account_id!r}"
        size: object = self.included_bytes
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"{where}: included_bytes must be a whole number of bytes, got {size!r}")
        if not 0 <= size <= MAX_BYTES:
            raise ValueError(f"{where}: included_bytes {size} is not between 0 and {MAX_BYTES}")
        moment: object = self.effective_from
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise ValueError(f"{where}: effective_from must be a timezone-aware datetime, got {moment!r}")
        if moment.tzinfo is not UTC:
            object.__setattr__(self, "effective_from", moment.astimezone(UTC))

    def allowance_byte_seconds(self, period: Period) -> Decimal:
        """``included_bytes * period.seconds``: the period is the "month", whatever its length."""
        with localcontext(_EXACT):
            allowance = self.included_bytes * period.seconds
            # A whole number is written with exponent 0 so it prints as digits, never as "1.0E+11".
            return allowance.quantize(Decimal(1)) if allowance == allowance.to_integral_value() else allowance


def plan_histories(subscriptions: Iterable[Subscription]) -> dict[str, list[Subscription]]:
    """Each account's plans in ``effective_from`` order; ``ValueError`` naming the account when two
    take effect at the same instant."""
    histories: dict[str, list[Subscription]] = defaultdict(list)
    for subscription in subscriptions:
        histories[subscription.account_id].append(subscription)
    for account_id, plans in histories.items():
        plans.sort(key=lambda plan: plan.effective_from)
        for earlier, later in pairwise(plans):
            if earlier.effective_from == later.effective_from:
                raise ValueError(
                    f"account {account_id!r} has two plans effective from {later.effective_from.isoformat()}"
                )
    return dict(histories)


def in_effect(plans: Iterable[Subscription], moment: datetime) -> Subscription | None:
    """The latest of one account's ``plans`` whose ``effective_from`` is at or before ``moment``."""
    started = [plan for plan in plans if plan.effective_from <= moment]
    return max(started, key=lambda plan: plan.effective_from, default=None)
