"""Network egress per interface for a billing period, less each account's included allowance.

Pure: no I/O, no clock.

**What is measured.** Every network interface (a virtual machine's NIC, a load balancer's public
interface) belongs to one account and has a cumulative counter of the bytes it has transmitted,
which an agent reads from time to time (Linux's ``tx_bytes``, SNMP's ``ifHCOutOctets``). A
reading is (interface, account, time, counter); the store keeps the readings and nothing else.

**From counters to egress.**

- A counter starts at zero when its interface is attached, so the first reading's value is what
  the interface sent since it was attached.
- Between two consecutive readings the interface sent ``later - earlier`` bytes. A reading lower
  than the one before it means the counter was reset (the interface was re-created by a migration,
  its host rebooted): it restarted from zero, so the interface sent ``later`` bytes since the reset.
  What it sent between the earlier reading and the reset is not known and not billed (the rule of
  Prometheus' ``increase()``); a 64-bit counter does not wrap in practice.
- Those bytes are billed in the period that holds the **later** reading, as a meter is billed on
  the date it is read. Bytes are never split across periods (no interpolation, so never a fraction
  of a byte), every byte the counter counted is billed in exactly one period, and a period's egress
  depends only on readings taken before its end: answering a closed period again gives the same
  inventory.

**The inventory.** Every interface with at least one reading inside ``[period.start, period.end)``
is listed, zero egress included (an idle interface). An interface with no reading in the period has
nothing billed in it: what it sent goes to the period of its next reading.

**The allowance.** Each account's plan in effect at the period's start (``workers.network.plans``)
gives it ``included_bytes`` of free egress per period, spent over its interfaces in
``interface_id`` order, never taking a quantity below zero.

**The records.** One per listed interface: metric ``egress``, unit ``byte`` (converted by the
coordinator to the rate card's ``GB``), resource type ``interface``, quantity = the bytes sent less
the allowance spent on it, as a whole-number decimal (exact: integer arithmetic throughout).
Attributes: ``gross_bytes`` (sent in the period), ``included_bytes`` (allowance spent on it),
``readings`` (inside the period) and ``counter_resets`` (seen inside the period).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Final

from contracts import Period, UsageRecord
from workers.network.plans import MAX_BYTES, Plan, in_effect, plan_histories

RESOURCE_TYPE: Final = "interface"
METRIC: Final = "egress"
"""The rate card's item (``[items.egress]``, billed in ``GB``)."""
UNIT: Final = "byte"
"""A unit of the coordinator's vocabulary (``contracts/units.py``): ``byte`` → ``GB`` exactly."""

# The lengths UsageRecord accepts; checked up front so a bad reading names its field.
_MAX_ACCOUNT_ID: Final = 128
_MAX_INTERFACE_ID: Final = 256


def _check_id(where: str, field: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {field} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise ValueError(f"{where}: {field} is longer than {max_length} characters")


@dataclass(frozen=True, slots=True)
class CounterReading:
    """The transmitted-bytes counter of one interface at ``at``.

    ``at`` must be timezone-aware and is normalised to UTC; ``tx_bytes`` is a whole number of bytes
    between 0 and 2^63 - 1. Invalid values raise ``ValueError`` naming the interface and the field.
    """

    interface_id: str
    account_id: str
    at: datetime
    tx_bytes: int

    @classmethod
    def trusted(cls, interface_id: str, account_id: str, at: datetime, tx_bytes: int) -> CounterReading:
        """A reading whose source made it valid (the seed), built without ``__post_init__``'s checks;
        ``at`` must already be in UTC. Stores still check how readings fit together."""
        reading = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(reading, "interface_id", interface_id)
        setattr_(reading, "account_id", account_id)
        setattr_(reading, "at", at)
        setattr_(reading, "tx_bytes", tx_bytes)
        return reading

    def __post_init__(self) -> None:
        _check_id("reading", "interface_id", self.interface_id, _MAX_INTERFACE_ID)
        where = f"interface {self.interface_id!r}"
        _check_id(where, "account_id", self.account_id, _MAX_ACCOUNT_ID)
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ValueError(f"{where}: at must be a timezone-aware datetime, got {self.at!r}")
        if self.at.tzinfo is not UTC:
            object.__setattr__(self, "at", self.at.astimezone(UTC))
        value: object = self.tx_bytes
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: tx_bytes must be a whole number of bytes, got {value!r}")
        if not 0 <= value <= MAX_BYTES:
            raise ValueError(f"{where}: tx_bytes {value} is not between 0 and {MAX_BYTES}")


@dataclass(frozen=True, slots=True)
class InterfaceReadings:
    """One interface's readings as its store returns them: ``times`` strictly increasing (UTC),
    ``counters[i]`` read at ``times[i]``. Trusted, not re-validated one by one."""

    interface_id: str
    times: Sequence[datetime]
    counters: Sequence[int]


@dataclass(frozen=True, slots=True)
class AccountInterfaces:
    """Every interface of one account with its plan in effect at the period's start (``None``: no
    allowance)."""

    account_id: str
    plan: Plan | None
    interfaces: Sequence[InterfaceReadings]


@dataclass(frozen=True, slots=True)
class Egress:
    """What one interface sent in a period, by its readings."""

    gross_bytes: int
    readings: int
    counter_resets: int


def interface_egress(interface: InterfaceReadings, period: Period) -> Egress | None:
    """The bytes ``interface`` sent that are billed in ``period``, or None when no reading of it
    falls inside the period (it is not listed). Readings at or after the period's end are ignored.

    Raises ``ValueError`` naming the interface when its times do not strictly increase or there are
    not as many counters as times.
    """
    times, counters = interface.times, interface.counters
    if len(times) != len(counters):
        raise ValueError(
            f"interface {interface.interface_id!r}: "
            f"{len(times)} reading time(s) for {len(counters)} counter(s)"
        )
    if not all(map(operator.lt, times, times[1:])):
        raise ValueError(f"interface {interface.interface_id!r}: reading times do not strictly increase")
    start, end = period.start, period.end
    previous: int | None = None
    gross = readings = resets = 0
    for at, counter in zip(times, counters, strict=True):
        if at >= end:
            break
        if previous is None:
            sent = counter  # since the interface was attached, its counter at zero
        elif counter < previous:
            sent = counter  # reset: counting again from zero
            resets += at >= start
        else:
            sent = counter - previous
        if at >= start:
            gross += sent
            readings += 1
        previous = counter
    return Egress(gross, readings, resets) if readings else None


def account_usage(account: AccountInterfaces, period: Period) -> list[UsageRecord]:
    """One account's records, sorted by interface id: each listed interface's egress less the share
    of the account's allowance spent on it (in ``interface_id`` order, never below zero).

    Raises ``ValueError`` if the plan only takes effect after the period's start, or an interface
    is listed twice.
    """
    plan = account.plan
    if plan is not None and plan.effective_from > period.start:
        raise ValueError(
            f"account {account.account_id!r}: its plan takes effect at {plan.effective_from.isoformat()}, "
            f"after the period's start {period.start.isoformat()}"
        )
    measured: list[tuple[str, Egress]] = []
    for interface in account.interfaces:
        egress = interface_egress(interface, period)
        if egress is not None:
            measured.append((interface.interface_id, egress))
    measured.sort(key=lambda item: item[0])
    for (first, _), (second, _) in pairwise(measured):
        if first == second:
            raise ValueError(f"interface {first!r}: listed twice for account {account.account_id!r}")
    remaining = plan.included_bytes if plan is not None else 0
    records: list[UsageRecord] = []
    for interface_id, egress in measured:
        included = min(egress.gross_bytes, remaining)
        remaining -= included
        records.append(
            UsageRecord(
                account_id=account.account_id,
                resource_id=interface_id,
                resource_type=RESOURCE_TYPE,
                metric=METRIC,
                quantity=Decimal(egress.gross_bytes - included),
                unit=UNIT,
                attributes={
                    "gross_bytes": str(egress.gross_bytes),
                    "included_bytes": str(included),
                    "readings": str(egress.readings),
                    "counter_resets": str(egress.counter_resets),
                },
            )
        )
    return records


def stream_network_usage(accounts: Iterable[AccountInterfaces], period: Period) -> Iterator[UsageRecord]:
    """``account_usage`` of each account in turn, holding one account at a time.

    ``accounts`` must come in strictly increasing ``account_id`` order (as the store gives them), so
    that an account cannot appear twice and get its allowance twice; ``ValueError`` otherwise. The
    records come sorted by ``(account_id, resource_id)``, exactly ``network_usage``'s list.
    """
    previous: str | None = None
    for account in accounts:
        if previous is not None and account.account_id <= previous:
            raise ValueError(
                f"accounts are not in increasing order: {account.account_id!r} after {previous!r}"
            )
        previous = account.account_id
        yield from account_usage(account, period)


def network_usage(
    readings: Iterable[CounterReading], plans: Iterable[Plan], period: Period
) -> list[UsageRecord]:
    """Every interface's record for ``period`` from readings in any order and each account's plan
    history (the plan in effect at the period's start applies), sorted by ``(account_id, resource_id)``.

    An identical reading given twice counts once. Raises ``ValueError`` naming the interface for
    two different counters at the same instant or an interface under two accounts, and naming the
    account for two plans taking effect at the same instant.
    """
    owners: dict[str, str] = {}
    counters: dict[str, dict[datetime, int]] = defaultdict(dict)
    for reading in readings:
        where = f"interface {reading.interface_id!r}"
        owner = owners.setdefault(reading.interface_id, reading.account_id)
        if owner != reading.account_id:
            raise ValueError(f"{where}: read under account {reading.account_id!r} and {owner!r}")
        known = counters[reading.interface_id].setdefault(reading.at, reading.tx_bytes)
        if known != reading.tx_bytes:
            raise ValueError(
                f"{where}: two different counters at {reading.at.isoformat()} "
                f"({known} and {reading.tx_bytes})"
            )
    by_account: dict[str, list[InterfaceReadings]] = defaultdict(list)
    for interface_id in sorted(counters):
        ordered = sorted(counters[interface_id].items())
        by_account[owners[interface_id]].append(
            InterfaceReadings(interface_id, [at for at, _ in ordered], [value for _, value in ordered])
        )
    histories = plan_histories(plans)
    accounts = (
        AccountInterfaces(account_id, in_effect(histories.get(account_id, ()), period.start), interfaces)
        for account_id, interfaces in sorted(by_account.items())
    )
    return list(stream_network_usage(accounts, period))
