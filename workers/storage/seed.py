"""Deterministic demo data for the storage service: volumes, buckets and subscriptions.

Accounts are named ``acct-0001``, ``acct-0002``, ... like the compute service's, so the two services'
inventories overlap. Volumes are sampled when they are created, resized or deleted (their size is
provisioned); buckets are sampled daily, a few short-lived scratch buckets hourly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from contracts import Period
from workers.storage.plans import Subscription, parse_bytes
from workers.storage.store import StorageStore
from workers.storage.usage import SizeSample

GB: Final = 10**9
VOLUME_SIZES_GB: Final = (8, 10, 20, 50, 100, 250, 500)
INCLUDED: Final = "100 GB"
"""The allowance of a subscribed account: 100 x 10^9 bytes held all period, in effect since always."""


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed`` wrote."""

    path: Path
    period_id: str
    accounts: int
    subscriptions: int
    volumes: int
    buckets: int
    samples: int

    def __str__(self) -> str:
        return (
            f"seeded {self.path} for {self.period_id}: {self.accounts} accounts "
            f"({self.subscriptions} with {INCLUDED} included), "
            f"{self.volumes} volumes, {self.buckets} buckets, {self.samples} samples"
        )


def seed(store_path: Path, period: Period, *, accounts: int = 40, rng_seed: int = 11) -> SeedSummary:
    """Replace the database's whole content with a deterministic sample around ``period``.

    Seeding clears every sample and subscription first (in the same transaction), so seeding twice
    leaves the same data, never duplicates. The same arguments always write the same rows.

    Each account has 0-3 volumes and 0-3 buckets: volumes created before or inside the period, some
    resized or deleted inside it, a few created and deleted before it (not billed); growing buckets;
    ``acct-0001`` always has an empty bucket. About half the accounts have a plan of 100 GB.
    """
    if accounts < 0:
        raise ValueError(f"accounts must be >= 0, got {accounts}")
    rng = random.Random(rng_seed)
    samples: list[SizeSample] = []
    subscribed: list[str] = []
    volumes = buckets = 0
    for number in range(1, accounts + 1):
        account = f"acct-{number:04d}"
        if rng.random() < 0.5:
            subscribed.append(account)
        for index in range(1, rng.randint(0, 3) + 1):
            samples += _volume(rng, f"vol-{number:04d}-{index}", account, period)
            volumes += 1
        bucket_count = rng.randint(0, 3)
        if number == 1:
            samples += _empty_bucket(f"bkt-{number:04d}-0", account, period)
            buckets += 1
        for index in range(1, bucket_count + 1):
            samples += _bucket(rng, f"bkt-{number:04d}-{index}", account, period)
            buckets += 1

    store_path.parent.mkdir(parents=True, exist_ok=True)
    with StorageStore(store_path) as store:
        included = parse_bytes(INCLUDED)
        written = store.replace_all(samples, [Subscription(account, included) for account in subscribed])
    return SeedSummary(store_path, period.period_id, accounts, len(subscribed), volumes, buckets, written)


# The samples below are valid by construction (whole bytes >= 0, UTC times), so they are built with
# SizeSample.trusted: StorageStore.replace_all still checks how each resource's samples fit together.


def _moment(rng: random.Random, low: datetime, high: datetime) -> datetime:
    """A whole minute in ``[low, high)`` (``low`` itself if the span is under a minute)."""
    minutes = int((high - low).total_seconds() // 60)
    return low + timedelta(minutes=rng.randrange(minutes)) if minutes > 0 else low


def _volume(rng: random.Random, resource_id: str, account: str, period: Period) -> list[SizeSample]:
    def sample(at: datetime, size: int | None) -> SizeSample:
        return SizeSample.trusted(resource_id, account, "volume", at, size)

    size = rng.choice(VOLUME_SIZES_GB) * GB
    fate = rng.random()
    if fate < 0.08:  # created and deleted before the period: never billed for it
        created = period.start - timedelta(days=rng.randint(20, 60))
        deleted = _moment(rng, created + timedelta(hours=1), period.start - timedelta(days=1))
        return [sample(created, size), sample(deleted, None)]
    if fate < 0.6:
        created = _moment(rng, period.start - timedelta(days=90), period.start)
    else:
        created = _moment(rng, period.start, period.end - timedelta(hours=1))
    result = [sample(created, size)]
    live_from = max(created, period.start)
    end = period.end
    if rng.random() < 0.25:
        end = _moment(rng, live_from + timedelta(minutes=30), period.end)
    if rng.random() < 0.3:
        resized = _moment(rng, live_from + timedelta(minutes=1), end)
        if resized > created:
            result.append(sample(resized, size * rng.choice((2, 3, 4))))
    if end < period.end:
        result.append(sample(end, None))
    return result


def _empty_bucket(resource_id: str, account: str, period: Period) -> list[SizeSample]:
    return [SizeSample.trusted(resource_id, account, "bucket", period.start - timedelta(days=3), 0)]


def _bucket(rng: random.Random, resource_id: str, account: str, period: Period) -> list[SizeSample]:
    def sample(at: datetime, size: int | None) -> SizeSample:
        return SizeSample.trusted(resource_id, account, "bucket", at, size)

    fate = rng.random()
    if fate < 0.08:  # created and deleted before the period
        created = period.start - timedelta(days=rng.randint(10, 40))
        return [sample(created, rng.randint(0, 5 * GB)), sample(created + timedelta(days=5), None)]
    if fate < 0.2:  # a scratch bucket: hourly samples for a few days inside the period, then deleted
        step = timedelta(hours=1)
        first = _moment(rng, period.start, period.end - timedelta(days=5))
        last = first + timedelta(days=rng.randint(1, 4))
        growth = (0, GB // 2)
    else:  # a long-lived bucket, sampled daily from shortly before the period (or its creation)
        step = timedelta(days=1)
        first = _moment(rng, period.start - timedelta(days=3), period.end - timedelta(days=2))
        last = period.end
        growth = (0, 2 * GB)
    size = rng.randint(0, 30 * GB)
    result: list[SizeSample] = []
    at = first
    while at < last:
        result.append(sample(at, size))
        size += rng.randint(*growth)
        at += step
    if last < period.end:
        result.append(sample(last, None))
    return result
