"""Storage usage for a billing period: time-weighted byte-seconds, less the included allowance.

Pure: no I/O. A resource's size is a step function of time. A sample's size holds from its time
until the resource's next sample. Before the first sample the resource did not exist, and after a
deletion marker (``size_bytes=None``) it exists no more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Final, Literal

from contracts import Period, UsageRecord

Kind = Literal["volume", "bucket"]
KINDS: Final[tuple[Kind, ...]] = ("volume", "bucket")
METRICS: Final[Mapping[str, str]] = {"volume": "block_storage", "bucket": "object_storage"}
UNIT: Final = "byte-second"
BYTES_PER_GB: Final = Decimal(10**9)

# Decimal's default 28 digits would silently round petabyte-scale byte-seconds; 80 digits plus an
# Inexact trap makes any rounding an error instead of a wrong bill.
_EXACT: Final = Context(
    prec=80, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact]
)


def _check_id(where: str, field: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {field} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise ValueError(f"{where}: {field} is longer than {max_length} characters")


@dataclass(frozen=True, slots=True)
class SizeSample:
    """The size of one resource from ``at`` on; ``size_bytes=None`` marks its deletion.

    ``at`` must be timezone-aware and is normalised to UTC. Invalid values raise ``ValueError``
    naming the resource and the field.
    """

    resource_id: str
    account_id: str
    kind: Kind
    at: datetime
    size_bytes: int | None

    def __post_init__(self) -> None:
        _check_id("sample", "resource_id", self.resource_id, 256)
        where = f"resource {self.resource_id!r}"
        _check_id(where, "account_id", self.account_id, 128)
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ValueError(f"{where}: at must be a timezone-aware datetime, got {self.at!r}")
        object.__setattr__(self, "at", self.at.astimezone(UTC))
        size = self.size_bytes
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int):
                raise ValueError(f"{where}: size_bytes must be a whole number of bytes or None, got {size!r}")
            if size < 0:
                raise ValueError(f"{where}: size_bytes {size} is negative")

    @property
    def deleted(self) -> bool:
        """True for a deletion marker."""
        return self.size_bytes is None


@dataclass(frozen=True, slots=True)
class Subscription:
    """An account's plan: ``included_gb_month`` GB-month of storage per billing period, free."""

    account_id: str
    included_gb_month: Decimal

    def __post_init__(self) -> None:
        _check_id("subscription", "account_id", self.account_id, 128)
        where = f"subscription of account {self.account_id!r}"
        value: object = self.included_gb_month
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
            object.__setattr__(self, "included_gb_month", value)
        if not isinstance(value, Decimal):
            raise ValueError(f"{where}: included_gb_month must be a Decimal, got {value!r}")
        if not value.is_finite() or value < 0:
            raise ValueError(f"{where}: included_gb_month {value} must be a finite number >= 0")

    def allowance_byte_seconds(self, period: Period) -> Decimal:
        """The allowance in byte-seconds: ``included_gb_month * 10**9 * period.seconds``.

        A "month" is the billing period itself, whatever its length, so 1 GB-month is one GB held
        for the whole period. The coordinator's normalizer converts byte-seconds to GB-month the
        same way, so an account exactly at its allowance is billed zero.
        """
        with localcontext(_EXACT):
            allowance = self.included_gb_month * BYTES_PER_GB * period.seconds
            # A whole number is written with exponent 0 so it prints as digits, never as "1.0E+11".
            return allowance.quantize(Decimal(1)) if allowance == allowance.to_integral_value() else allowance


@dataclass(frozen=True, slots=True)
class _Step:
    start: datetime
    end: datetime | None
    size_bytes: int


@dataclass(frozen=True, slots=True)
class _History:
    resource_id: str
    account_id: str
    kind: Kind
    created: datetime
    deleted: datetime | None
    steps: tuple[_Step, ...]

    def exists_during(self, period: Period) -> bool:
        return self.created < period.end and (self.deleted is None or self.deleted > period.start)

    def byte_seconds(self, period: Period) -> Decimal:
        return sum(
            (Decimal(step.size_bytes) * period.overlap_seconds(step.start, step.end) for step in self.steps),
            Decimal(0),
        )


def storage_usage(
    samples: Iterable[SizeSample], subscriptions: Iterable[Subscription], period: Period
) -> list[UsageRecord]:
    """One ``UsageRecord`` per resource that existed at any moment of ``[period.start, period.end)``.

    The quantity is the resource's byte-seconds inside the period, less the share of its account's
    allowance allocated to it. The allowance is spent greedily, volumes before buckets, then by
    ``resource_id``, and never takes a quantity below zero. Attributes carry ``gross_byte_seconds``
    and ``included_byte_seconds``. Records are sorted by ``(account_id, resource_id)``.

    Samples may come in any order. Raises ``ValueError`` naming the resource on a sample after its
    deletion, a deletion without an earlier size, two different samples at the same instant, or a
    resource whose kind or account changes; and naming the account on a duplicate subscription.
    """
    histories = _histories(samples)
    plans = _plans(subscriptions)
    by_account: dict[str, list[_History]] = defaultdict(list)
    for history in histories:
        if history.exists_during(period):
            by_account[history.account_id].append(history)

    records: list[UsageRecord] = []
    with localcontext(_EXACT):
        for account_id, resources in by_account.items():
            plan = plans.get(account_id)
            remaining = plan.allowance_byte_seconds(period) if plan else Decimal(0)
            resources.sort(key=lambda h: (KINDS.index(h.kind), h.resource_id))
            for history in resources:
                gross = history.byte_seconds(period)
                included = min(gross, remaining)
                remaining -= included
                records.append(
                    UsageRecord(
                        account_id=account_id,
                        resource_id=history.resource_id,
                        resource_type=history.kind,
                        metric=METRICS[history.kind],
                        quantity=gross - included,
                        unit=UNIT,
                        attributes={"gross_byte_seconds": str(gross), "included_byte_seconds": str(included)},
                    )
                )
    records.sort(key=lambda record: (record.account_id, record.resource_id))
    return records


def _plans(subscriptions: Iterable[Subscription]) -> dict[str, Subscription]:
    plans: dict[str, Subscription] = {}
    for subscription in subscriptions:
        if subscription.account_id in plans:
            raise ValueError(f"account {subscription.account_id!r} has more than one subscription")
        plans[subscription.account_id] = subscription
    return plans


def _histories(samples: Iterable[SizeSample]) -> list[_History]:
    grouped: dict[str, list[SizeSample]] = defaultdict(list)
    for sample in samples:
        grouped[sample.resource_id].append(sample)
    return [_history(resource_id, grouped[resource_id]) for resource_id in sorted(grouped)]


def _history(resource_id: str, samples: list[SizeSample]) -> _History:
    where = f"resource {resource_id!r}"
    ordered = sorted(samples, key=lambda s: s.at)
    first = ordered[0]
    if first.size_bytes is None:
        raise ValueError(f"{where}: deleted at {first.at.isoformat()} without any earlier size sample")
    steps: list[_Step] = []
    deleted: datetime | None = None
    previous = first
    size: int = first.size_bytes
    for sample in ordered[1:]:
        if sample.account_id != first.account_id:
            raise ValueError(
                f"{where}: account changes from {first.account_id!r} to {sample.account_id!r} "
                f"at {sample.at.isoformat()}"
            )
        if sample.kind != first.kind:
            raise ValueError(
                f"{where}: kind changes from {first.kind!r} to {sample.kind!r} at {sample.at.isoformat()}"
            )
        if sample.at == previous.at:
            if sample == previous:
                continue  # the same measurement delivered twice
            raise ValueError(f"{where}: two different samples at {sample.at.isoformat()}")
        if deleted is not None:
            raise ValueError(
                f"{where}: sample at {sample.at.isoformat()} after its deletion at {deleted.isoformat()}"
            )
        steps.append(_Step(previous.at, sample.at, size))
        if sample.size_bytes is None:
            deleted = sample.at
        else:
            size = sample.size_bytes
        previous = sample
    if deleted is None:
        steps.append(_Step(previous.at, None, size))
    return _History(resource_id, first.account_id, first.kind, first.at, deleted, tuple(steps))
