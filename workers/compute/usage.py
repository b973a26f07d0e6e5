"""Compute usage from instance lifecycle events. Pure: no I/O, no clock.

An instance lives over ``[create, delete)`` (no delete: still running). Its size is set by the
create event and changed by each resize from the resize's time on; a resize to 0 vCPUs / 0 MiB
means "stopped". Usage in a period is the size integrated over the part of the lifetime that
falls inside the period, in vCPU-seconds and MiB-seconds, exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from itertools import groupby, pairwise
from typing import Literal, get_args

from contracts import Period, UsageRecord

EventKind = Literal["create", "resize", "delete"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)

RESOURCE_TYPE = "instance"
VCPU_METRIC, VCPU_UNIT = "vcpu", "vCPU-second"
MEMORY_METRIC, MEMORY_UNIT = "memory", "MiB-second"

# The lengths UsageRecord accepts; checked up front so a bad event names its field.
_MAX_ACCOUNT_ID = 128
_MAX_INSTANCE_ID = 256


@dataclass(frozen=True)
class InstanceEvent:
    """One lifecycle event of one instance; ``at`` is timezone-aware and normalised to UTC.

    ``create`` and ``resize`` carry ``vcpus`` and ``memory_mib`` (a resize may set both to 0:
    stopped); ``delete`` carries neither. Invalid values raise ``ValueError`` naming the field.
    """

    instance_id: str
    account_id: str
    kind: EventKind
    at: datetime
    vcpus: int | None = None
    memory_mib: int | None = None

    @classmethod
    def trusted(
        cls,
        instance_id: str,
        account_id: str,
        kind: EventKind,
        at: datetime,
        vcpus: int | None,
        memory_mib: int | None,
    ) -> InstanceEvent:
        """An event its source has already checked (the service's own store), built without the
        checks of ``__post_init__``: they would cost more than the usage maths on every stored row.
        ``at`` must already be in UTC."""
        event = object.__new__(cls)
        event.__dict__.update(
            instance_id=instance_id,
            account_id=account_id,
            kind=kind,
            at=at,
            vcpus=vcpus,
            memory_mib=memory_mib,
        )
        return event

    def __post_init__(self) -> None:
        _check_id("instance_id", self.instance_id, _MAX_INSTANCE_ID)
        _check_id("account_id", self.account_id, _MAX_ACCOUNT_ID)
        where = f"instance {self.instance_id!r}"
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {', '.join(EVENT_KINDS)}")
        if not isinstance(self.at, datetime):
            raise ValueError(f"{where}: at must be a datetime, got {type(self.at).__name__}")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(f"{where}: at {self.at.isoformat()} is a naive datetime; give it a timezone")
        object.__setattr__(self, "at", self.at.astimezone(UTC))
        if self.kind == "delete":
            for field in ("vcpus", "memory_mib"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{where}: a delete event must not carry {field}")
            return
        for field in ("vcpus", "memory_mib"):
            value = getattr(self, field)
            if value is None:
                raise ValueError(f"{where}: a {self.kind} event needs {field}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: {field} must be an int, got {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{where}: {field} {value} is negative")
            # Only a resize may stop an instance; an instance is never born stopped.
            if value == 0 and self.kind == "create":
                raise ValueError(f"{where}: {field} of a create event must be positive")


def _check_id(field: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise ValueError(f"{field} {value[:40]!r}... is longer than {max_length} characters")


def compute_usage(events: Iterable[InstanceEvent], period: Period) -> list[UsageRecord]:
    """Usage of every instance whose lifetime overlaps ``period``, two records per instance.

    Each listed instance gets a ``vcpu`` record in vCPU-seconds and a ``memory`` record in
    MiB-seconds, zero included (e.g. stopped all period). Instances deleted at or before the
    period start, or created at or after its end, are not listed. Events may come in any order.
    Raises ``ValueError`` naming the instance if its history is inconsistent (no create, two
    creates, an event before its create or after its delete, two events at the same instant,
    events under different accounts). The result is sorted by (account_id, resource_id, metric).
    """
    by_instance: defaultdict[str, list[InstanceEvent]] = defaultdict(list)
    for event in events:
        by_instance[event.instance_id].append(event)

    records: list[UsageRecord] = []
    # Exactness is guaranteed, not hoped for: any rounding would raise instead of billing wrong.
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = True
        for instance_id, history in by_instance.items():
            records.extend(_instance_usage(instance_id, history, period))
    records.sort(key=lambda r: (r.account_id, r.resource_id, r.metric))
    return records


def stream_compute_usage(events: Iterable[InstanceEvent], period: Period) -> Iterator[UsageRecord]:
    """``compute_usage``'s records, instance by instance, holding one instance's events at a time.

    ``events`` must come grouped by instance, instances in strictly increasing ``instance_id`` order
    (as ``ComputeStore.iter_events`` gives them; an instance's own events in any order), so that an
    instance cannot appear twice; ``ValueError`` otherwise. Each instance gives the same records as
    ``compute_usage`` (memory, then vcpu), so the stream is ``compute_usage``'s list ordered by
    ``(resource_id, metric)`` instead of ``(account_id, resource_id, metric)``.
    """
    previous: str | None = None
    for instance_id, group in groupby(events, key=_instance_id):
        if previous is not None and instance_id <= previous:
            raise ValueError(
                f"events are not grouped by instance in increasing order: {instance_id!r} after {previous!r}"
            )
        previous = instance_id
        yield from _exact_instance_usage(instance_id, list(group), period)


def _instance_id(event: InstanceEvent) -> str:
    return event.instance_id


def _exact_instance_usage(
    instance_id: str, history: list[InstanceEvent], period: Period
) -> list[UsageRecord]:
    # The context is entered per instance, not around the generator: a generator advanced from
    # several threads (a batch at a time) would otherwise lose it between batches.
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = True
        records = _instance_usage(instance_id, history, period)
    records.sort(key=lambda r: r.metric)
    return records


def _instance_usage(instance_id: str, history: list[InstanceEvent], period: Period) -> list[UsageRecord]:
    timeline = _checked_timeline(instance_id, history)
    created = timeline[0].at
    deleted = timeline[-1].at if timeline[-1].kind == "delete" else None
    if created >= period.end or (deleted is not None and deleted <= period.start):
        return []

    sized = [event for event in timeline if event.kind != "delete"]
    vcpu_seconds = Decimal(0)
    memory_seconds = Decimal(0)
    for index, event in enumerate(sized):
        until = sized[index + 1].at if index + 1 < len(sized) else deleted
        seconds = period.overlap_seconds(event.at, until)
        vcpu_seconds += _size(event.vcpus) * seconds
        memory_seconds += _size(event.memory_mib) * seconds

    # The size shown is the one in effect just before the instance left the period.
    leaves = period.end if deleted is None else min(deleted, period.end)
    current = [event for event in sized if event.at < leaves][-1]
    attributes = {"vcpus": str(current.vcpus), "memory_mib": str(current.memory_mib)}
    account_id = timeline[0].account_id
    return [
        UsageRecord(
            account_id=account_id,
            resource_id=instance_id,
            resource_type=RESOURCE_TYPE,
            metric=metric,
            quantity=quantity,
            unit=unit,
            attributes=attributes,
        )
        for metric, unit, quantity in (
            (VCPU_METRIC, VCPU_UNIT, vcpu_seconds),
            (MEMORY_METRIC, MEMORY_UNIT, memory_seconds),
        )
    ]


def _checked_timeline(instance_id: str, history: list[InstanceEvent]) -> Sequence[InstanceEvent]:
    """The instance's events in time order, or ``ValueError`` if they cannot describe one lifetime."""
    where = f"instance {instance_id!r}"
    accounts = sorted({event.account_id for event in history})
    if len(accounts) > 1:
        raise ValueError(f"{where}: events belong to different accounts ({', '.join(accounts)})")
    timeline = sorted(history, key=lambda event: event.at)
    for earlier, later in pairwise(timeline):
        if earlier.at == later.at:
            raise ValueError(
                f"{where}: two events ({earlier.kind}, {later.kind}) at the same instant "
                f"{later.at.isoformat()}"
            )
    creates = [event for event in timeline if event.kind == "create"]
    if not creates:
        raise ValueError(f"{where}: has no create event")
    if len(creates) > 1:
        raise ValueError(f"{where}: has {len(creates)} create events")
    if timeline[0].kind != "create":
        first = timeline[0]
        raise ValueError(
            f"{where}: {first.kind} event at {first.at.isoformat()} comes before its create "
            f"at {creates[0].at.isoformat()}"
        )
    deletes = [index for index, event in enumerate(timeline) if event.kind == "delete"]
    if deletes and deletes[0] != len(timeline) - 1:
        after = timeline[deletes[0] + 1]
        raise ValueError(
            f"{where}: {after.kind} event at {after.at.isoformat()} comes after its delete "
            f"at {timeline[deletes[0]].at.isoformat()}"
        )
    return timeline


def _size(value: int | None) -> Decimal:
    # create/resize events always carry sizes (checked in InstanceEvent); this narrows the type.
    if value is None:
        raise AssertionError("a sized event has no size")
    return Decimal(value)
