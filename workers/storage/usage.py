"""Storage usage for a billing period: time-weighted byte-seconds, less the included allowance.

The allowance is the account's plan in effect at the period's start (``workers.storage.plans``).

Pure: no I/O. A resource's size is a step function of time. A sample's size holds from its time
until the resource's next sample. Before the first sample the resource did not exist, and after a
deletion marker (``size_bytes=None``) it exists no more.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from itertools import pairwise
from typing import Final, Literal

from contracts import Period, UsageRecord
from workers.storage.plans import Subscription, in_effect, plan_histories

Kind = Literal["volume", "bucket"]
KINDS: Final[tuple[Kind, ...]] = ("volume", "bucket")
METRICS: Final[Mapping[str, str]] = {"volume": "block_storage", "bucket": "object_storage"}
UNIT: Final = "byte-second"
_KIND_ORDER: Final[Mapping[str, int]] = {kind: order for order, kind in enumerate(KINDS)}

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


def _valid_id(value: object, max_length: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length and not value.isspace()


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

    @classmethod
    def trusted(
        cls, resource_id: str, account_id: str, kind: Kind, at: datetime, size_bytes: int | None
    ) -> SizeSample:
        """A sample whose source made it valid (the seed), built without ``__post_init__``'s checks;
        ``at`` must already be in UTC. Stores still check how samples fit together."""
        sample = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(sample, "resource_id", resource_id)
        setattr_(sample, "account_id", account_id)
        setattr_(sample, "kind", kind)
        setattr_(sample, "at", at)
        setattr_(sample, "size_bytes", size_bytes)
        return sample

    def __post_init__(self) -> None:
        at, size = self.at, self.size_bytes
        if (  # the usual valid sample, checked in one go; the checks below name what is wrong
            _valid_id(self.resource_id, 256)
            and _valid_id(self.account_id, 128)
            and self.kind in KINDS
            and isinstance(at, datetime)
            and (at.tzinfo is UTC or at.utcoffset() is not None)
            and (size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 0))
        ):
            if at.tzinfo is not UTC:
                object.__setattr__(self, "at", at.astimezone(UTC))
            return
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
    allowance allocated to it: ``subscriptions`` may hold each account's plan history, and the plan
    in effect at ``period.start`` applies. The allowance is spent greedily, volumes before buckets,
    then by ``resource_id``, and never takes a quantity below zero. Attributes carry
    ``gross_byte_seconds`` and ``included_byte_seconds``. Records are sorted by
    ``(account_id, resource_id)``.

    Samples may come in any order. Raises ``ValueError`` naming the resource on a sample after its
    deletion, a deletion without an earlier size, two different samples at the same instant, or a
    resource whose kind or account changes; and naming the account on two plans taking effect at
    the same instant.
    """
    histories = _histories(samples)
    plans = {
        account_id: in_effect(history, period.start)
        for account_id, history in plan_histories(subscriptions).items()
    }
    by_account: dict[str, list[_History]] = defaultdict(list)
    for history in histories:
        if history.exists_during(period):
            by_account[history.account_id].append(history)

    records: list[UsageRecord] = []
    with localcontext(_EXACT):
        for account_id, resources in by_account.items():
            grosses = [(h.resource_id, h.kind, h.byte_seconds(period)) for h in resources]
            records.extend(_allocate(account_id, grosses, plans.get(account_id), period))
    records.sort(key=lambda record: (record.account_id, record.resource_id))
    return records


def _allocate(
    account_id: str, grosses: list[tuple[str, Kind, Decimal]], plan: Subscription | None, period: Period
) -> list[UsageRecord]:
    """One account's records: its allowance spent greedily (volumes first, then by resource id),
    never below zero; the records come sorted by resource id. Call inside ``localcontext(_EXACT)``."""
    remaining = plan.allowance_byte_seconds(period) if plan else Decimal(0)
    records: list[UsageRecord] = []
    for resource_id, kind, gross in sorted(grosses, key=lambda g: (_KIND_ORDER[g[1]], g[0])):
        included = min(gross, remaining)
        remaining -= included
        records.append(
            UsageRecord(
                account_id=account_id,
                resource_id=resource_id,
                resource_type=kind,
                metric=METRICS[kind],
                quantity=gross - included,
                unit=UNIT,
                attributes={"gross_byte_seconds": str(gross), "included_byte_seconds": str(included)},
            )
        )
    records.sort(key=lambda record: record.resource_id)
    return records


@dataclass(frozen=True, slots=True)
class ResourceSamples:
    """One resource's samples as its store returns them: trusted, not re-validated one by one.

    ``times`` are timezone-aware and strictly increasing; ``sizes[i]`` holds from ``times[i]`` on,
    and ``None`` (the deletion) may only come last. The few cheap checks ``account_usage`` makes
    raise ``ValueError`` naming the resource.
    """

    resource_id: str
    kind: Kind
    times: list[datetime]
    sizes: list[int | None]


@dataclass(frozen=True, slots=True)
class AccountSamples:
    """Every resource of one account with its plan in effect at the period's start (``None``: no
    allowance)."""

    account_id: str
    subscription: Subscription | None
    resources: Sequence[ResourceSamples]


def stream_storage_usage(accounts: Iterable[AccountSamples], period: Period) -> Iterator[UsageRecord]:
    """``storage_usage``, account by account: exactly its records, in its order, one account held.

    ``accounts`` must come in strictly increasing ``account_id`` order (as the store gives them), so
    an account cannot appear twice and get its allowance twice; ``ValueError`` otherwise. A resource
    must belong to one account only: the store guarantees it (see ``StorageStore.account_samples``).
    """
    previous: str | None = None
    for account in accounts:
        if previous is not None and account.account_id <= previous:
            raise ValueError(
                f"accounts are not in increasing order: {account.account_id!r} after {previous!r}"
            )
        previous = account.account_id
        yield from account_usage(account, period)


def account_usage(account: AccountSamples, period: Period) -> list[UsageRecord]:
    """The records ``storage_usage`` gives for one account's resources and subscription.

    Raises ``ValueError`` if the subscription only takes effect after the period's start.

    Same arithmetic, done cheaply: each resource's byte-seconds are summed as whole byte-microseconds
    (Python ints) and turned into a Decimal once, with the exponent the sum of per-interval Decimals
    would have had, so quantities and attributes are identical, digit for digit.
    """
    grosses: list[tuple[str, Kind, Decimal]] = []
    start, end = period.start, period.end
    plan = account.subscription
    if plan is not None and plan.effective_from > start:
        raise ValueError(
            f"account {account.account_id!r}: its plan takes effect at {plan.effective_from.isoformat()}, "
            f"after the period's start {start.isoformat()}"
        )
    with localcontext(_EXACT):
        for resource in account.resources:
            gross = _gross_byte_seconds(resource, start, end)
            if gross is not None:
                grosses.append((resource.resource_id, resource.kind, gross))
        if len({resource_id for resource_id, _, _ in grosses}) < len(grosses):
            twice = sorted(resource_id for resource_id, _, _ in grosses)
            resource_id = next(a for a, b in pairwise(twice) if a == b)
            raise ValueError(f"resource {resource_id!r}: listed twice for account {account.account_id!r}")
        return _allocate(account.account_id, grosses, account.subscription, period)


_MICROSECOND: Final = timedelta(microseconds=1)
_MICROS_PER_SECOND: Final = 1_000_000


def _gross_byte_seconds(resource: ResourceSamples, start: datetime, end: datetime) -> Decimal | None:
    """The resource's byte-seconds inside ``[start, end)``, or None if it did not exist then."""
    times, sizes = resource.times, resource.sizes
    last = sizes[-1] if sizes else None
    if len(times) == 1 == len(sizes) and last is not None:  # a volume's usual case: one size, kept
        created = times[0]
        if created >= end:
            return None
        span = (end - max(created, start)) // _MICROSECOND
        return _exact_seconds(last * span, span)
    if (
        len(times) < 2
        or len(times) != len(sizes)
        or sizes[0] is None
        or sizes.count(None) > (last is None)
        or not all(map(operator.lt, times, times[1:]))
    ):
        raise _inconsistent(resource)
    if times[0] >= end or (last is None and times[-1] <= start):
        return None
    # Interval i runs from starts[i] with steps[i] bytes until starts[i + 1] (the last one until the
    # period's end, unless that last start is the deletion): the step function clipped to the period.
    first, stop = bisect_right(times, start), bisect_left(times, end)
    if first:  # the size in effect at the period's start (not a deletion: checked above)
        starts, steps = times[first - 1 : stop], sizes[first - 1 : stop]
        starts[0] = start
    else:
        starts, steps = times[:stop], sizes[:stop]
    ends = starts[1:]
    if steps[-1] is None:
        del starts[-1], steps[-1]
    else:
        ends.append(end)
    spans = list(map(operator.sub, ends, starts))
    # Samples taken on a schedule give few distinct spans: convert each distinct one once.
    micros = {span: span // _MICROSECOND for span in set(spans)}
    total: int = sum(map(operator.mul, steps, map(micros.__getitem__, spans)))  # no None left in steps
    return _exact_seconds(total, math.gcd(*micros.values()))


def _exact_seconds(total_micros: int, common: int) -> Decimal:
    """``total_micros / 10**6`` as the Decimal that summing ``size * (micros_i / 10**6)`` gives.

    ``Decimal(micros_i) / 10**6`` keeps only the decimals it needs, and a sum keeps the most any
    term has: 6 minus the trailing zeros (at most 6) that every ``micros_i`` has, i.e. that their
    gcd ``common`` has. ``total_micros`` is a multiple of that power of ten, so nothing is rounded.
    """
    if common % _MICROS_PER_SECOND == 0:
        return Decimal(total_micros // _MICROS_PER_SECOND)
    decimals, unit = 6, 1
    while common % 10 == 0:
        common //= 10
        decimals -= 1
        unit *= 10
    return Decimal(total_micros // unit).scaleb(-decimals)


def _inconsistent(resource: ResourceSamples) -> ValueError:
    """Why ``resource``'s samples cannot describe one lifetime (only called when they cannot)."""
    where = f"resource {resource.resource_id!r}"
    times, sizes = resource.times, resource.sizes
    if not times or len(times) != len(sizes):
        return ValueError(f"{where}: {len(times)} sample time(s) for {len(sizes)} size(s)")
    if sizes[0] is None:
        return ValueError(f"{where}: deleted at {times[0].isoformat()} without any earlier size sample")
    if None in sizes[:-1]:
        return ValueError(f"{where}: a sample comes after its deletion")
    return ValueError(f"{where}: sample times do not strictly increase")


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
