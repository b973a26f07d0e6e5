"""Network plans: how many bytes of egress an account may send each billing period for free.

Pure: no I/O. An allowance is a whole number of **bytes** per billing period (the calendar month),
so it means the same to the coordinator whether its rate card bills GB as 10^9 or 2^30 bytes: an
account that sends exactly its allowance in a period is billed zero egress, and zero converts to
zero in any unit. A plan is written with its unit, ``"100 GB"`` (10^9 bytes each) or ``"100 GiB"``
(2^30 bytes each); a bare number has no unit and is refused.

Plans change over time: each one is in effect from its ``effective_from`` until the account's next
one. A period is answered with the plan in effect at the period's **start** (an upgrade in the
middle of a month applies from the next one), so answering an old period again (a replay) gives the
allowance it had then, not today's. An account with no plan in effect has no allowance.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Final

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

_AMOUNT: Final = re.compile(r"\s*(\d{1,30})(?:\.(\d{1,18}))?\s*([A-Za-z]+)\s*", re.ASCII)


def parse_bytes(text: str) -> int:
    """``"100 GB"`` → 100 000 000 000; ``"100 GiB"`` → 107 374 182 400; ``"1.5 kB"`` → 1500.

    Exact (integer arithmetic, no float). Raises ``ValueError`` for a missing or unknown unit, or an
    amount that is not a whole number of bytes.
    """
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an amount with its unit, such as '100 GB' (10^9 bytes each) "
            "or '100 GiB' (2^30 bytes each)"
        )
    whole, fraction, unit = match.groups()
    factor = BYTE_UNITS.get(unit)
    if factor is None:
        raise ValueError(f"{text!r}: unknown unit {unit!r}, expected one of {', '.join(BYTE_UNITS)}")
    fraction = fraction or ""
    scale: int = 10 ** len(fraction)
    amount, remainder = divmod(int(whole + fraction) * factor, scale)
    if remainder:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    if amount > MAX_BYTES:
        raise ValueError(f"{text!r} is more than {MAX_BYTES} bytes")
    return amount


def allowance_bytes(value: int | str) -> int:
    """An allowance as given to the store: ``int`` bytes, or text with its unit (``parse_bytes``)."""
    if isinstance(value, str):
        return parse_bytes(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be whole bytes (int) or text with a unit such as '100 GB', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Plan:
    """An account's plan from ``effective_from`` on: its first ``included_bytes`` of egress in each
    billing period are free.

    ``effective_from`` must be timezone-aware and is normalised to UTC; invalid values raise
    ``ValueError`` naming the account and the field.
    """

    account_id: str
    included_bytes: int
    effective_from: datetime = ALWAYS

    def __post_init__(self) -> None:
        if not isinstance(self.account_id, str) or not self.account_id.strip():
            raise ValueError(f"plan: account_id must be a non-empty string, got {self.account_id!r}")
        if len(self.account_id) > 128:
            raise ValueError("plan: account_id is longer than 128 characters")
        where = f"plan of account {self.account_id!r}"
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


def plan_histories(plans: Iterable[Plan]) -> dict[str, list[Plan]]:
    """Each account's plans in ``effective_from`` order; ``ValueError`` naming the account when two
    take effect at the same instant."""
    histories: dict[str, list[Plan]] = defaultdict(list)
    for plan in plans:
        histories[plan.account_id].append(plan)
    for account_id, history in histories.items():
        history.sort(key=lambda plan: plan.effective_from)
        for earlier, later in pairwise(history):
            if earlier.effective_from == later.effective_from:
                raise ValueError(
                    f"account {account_id!r} has two plans effective from {later.effective_from.isoformat()}"
                )
    return dict(histories)


def in_effect(plans: Iterable[Plan], moment: datetime) -> Plan | None:
    """The latest of one account's ``plans`` whose ``effective_from`` is at or before ``moment``."""
    started = [plan for plan in plans if plan.effective_from <= moment]
    return max(started, key=lambda plan: plan.effective_from, default=None)
