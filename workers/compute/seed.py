"""A realistic, deterministic sample of instance events around one billing period.

Seeding REPLACES everything in the store (in one transaction), so seeding twice gives the same
contents as seeding once, and the same arguments always give the same events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from contracts import Period
from workers.compute.store import ComputeStore
from workers.compute.usage import InstanceEvent

VCPU_SIZES = (1, 2, 4, 8, 16)
MIB_PER_VCPU = (1024, 2048, 4096, 8192)
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 2048, 65536
DAY = 86_400
LOOKBACK_DAYS = 90

# Scenario -> weight for instances not forced into a scenario.
_WEIGHTS = {
    "running": 5,  # created before the period, still running
    "created_inside": 2,  # created inside the period, still running
    "deleted_inside": 2,  # created before, deleted inside
    "short_lived": 1,  # created and deleted inside
    "resized": 3,  # created before, resized once or twice inside
    "outlives": 1,  # created before, deleted after the period end
    "deleted_before": 1,  # created and deleted before the period: never billed
}
# At least this many of each, so every sample exercises the edge cases.
_FORCED = {"stopped": 2, "deleted_before": 3}


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed`` wrote; ``deleted_before_period`` instances must not appear in usage."""

    accounts: int
    instances: int
    events: int
    deleted_before_period: int
    stopped: int


def seed(store_path: Path, period: Period, *, accounts: int = 40, rng_seed: int = 7) -> SeedSummary:
    """Replace the store's events with a sample for ``accounts`` accounts around ``period``."""
    if accounts < 1:
        raise ValueError(f"accounts must be at least 1, got {accounts}")
    rng = random.Random(rng_seed)
    owners = [f"acct-{number:04d}" for number in range(1, accounts + 1) for _ in range(rng.randint(1, 4))]
    forced = [kind for kind, count in _FORCED.items() for _ in range(count)][: len(owners)]
    scenarios = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()), k=len(owners))
    for slot, kind in zip(rng.sample(range(len(owners)), len(forced)), forced, strict=True):
        scenarios[slot] = kind

    sampler = _Sampler(rng, period)
    events: list[InstanceEvent] = []
    for account_id, scenario in zip(owners, scenarios, strict=True):
        events.extend(sampler.instance(account_id, scenario))
    ComputeStore(store_path).replace_all(events)
    return SeedSummary(
        accounts=accounts,
        instances=len(owners),
        events=len(events),
        deleted_before_period=scenarios.count("deleted_before"),
        stopped=scenarios.count("stopped"),
    )


class _Sampler:
    def __init__(self, rng: random.Random, period: Period) -> None:
        self.rng = rng
        self.period = period
        self.length = int(period.seconds)
        self.ids: set[str] = set()

    def instance(self, account_id: str, scenario: str) -> list[InstanceEvent]:
        instance_id = self._new_id()
        vcpus, memory = self._size()

        def create(at: datetime) -> InstanceEvent:
            return InstanceEvent(instance_id, account_id, "create", at, vcpus, memory)

        def resize(at: datetime, size: tuple[int, int]) -> InstanceEvent:
            return InstanceEvent(instance_id, account_id, "resize", at, *size)

        def delete(at: datetime) -> InstanceEvent:
            return InstanceEvent(instance_id, account_id, "delete", at)

        if scenario == "running":
            return [create(self._before())]
        if scenario == "created_inside":
            (created,) = self._inside(1)
            return [create(created)]
        if scenario == "deleted_inside":
            (deleted,) = self._inside(1)
            return [create(self._before()), delete(deleted)]
        if scenario == "short_lived":
            created, deleted = self._inside(2)
            return [create(created), delete(deleted)]
        if scenario == "resized":
            resizes = [resize(at, self._size()) for at in self._inside(self.rng.randint(1, 2))]
            return [create(self._before()), *resizes]
        if scenario == "outlives":
            deleted = self.period.end + timedelta(seconds=self.rng.randint(1, 30 * DAY))
            return [create(self._before()), delete(deleted)]
        if scenario == "stopped":
            # Stopped at or before the period start and never restarted: listed with zero usage.
            created, stopped = self._before_pair()
            return [create(created), resize(stopped, (0, 0))]
        if scenario == "deleted_before":
            # The delete may fall exactly on the period start: [create, start) does not overlap.
            created, deleted = self._before_pair()
            return [create(created), delete(deleted)]
        raise AssertionError(f"unknown scenario {scenario}")

    def _new_id(self) -> str:
        while True:
            instance_id = f"i-{self.rng.getrandbits(40):010x}"
            if instance_id not in self.ids:
                self.ids.add(instance_id)
                return instance_id

    def _size(self) -> tuple[int, int]:
        vcpus = self.rng.choice(VCPU_SIZES)
        memory = vcpus * self.rng.choice(MIB_PER_VCPU)
        return vcpus, min(MAX_MEMORY_MIB, max(MIN_MEMORY_MIB, memory))

    def _before(self) -> datetime:
        """A whole-second time strictly before the period start."""
        return self.period.start - timedelta(seconds=self.rng.randint(1, LOOKBACK_DAYS * DAY))

    def _before_pair(self) -> tuple[datetime, datetime]:
        """Two increasing times, the first strictly before the period start, the second at or before it."""
        later, earlier = sorted(self.rng.sample(range(LOOKBACK_DAYS * DAY), 2))
        return self.period.start - timedelta(seconds=earlier), self.period.start - timedelta(seconds=later)

    def _inside(self, count: int) -> list[datetime]:
        """``count`` increasing whole-second times after the period start (inside it unless it is tiny)."""
        offsets = sorted(self.rng.sample(range(1, max(self.length, count + 1)), count))
        return [self.period.start + timedelta(seconds=offset) for offset in offsets]
