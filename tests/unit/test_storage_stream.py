"""The storage service's streaming path: account by account, exactly storage_usage's records."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Period, UsageRecord
from workers.storage.plans import ALWAYS, Subscription, in_effect, plan_histories
from workers.storage.seed import seed
from workers.storage.service import StorageService
from workers.storage.store import StorageStore
from workers.storage.usage import (
    AccountSamples,
    Kind,
    ResourceSamples,
    SizeSample,
    account_usage,
    storage_usage,
    stream_storage_usage,
)

OCT = Period.month("2026-10")
US = timedelta(microseconds=1)
LENGTH_US = int(OCT.seconds) * 1_000_000
GB = 10**9

offsets = st.one_of(
    st.integers(min_value=-40 * 86_400 * 10**6, max_value=LENGTH_US + 10 * 86_400 * 10**6),
    st.sampled_from([0, 1, -1, LENGTH_US, LENGTH_US - 1, LENGTH_US + 1, 1_500_000, 60 * 10**6]),
    st.integers(min_value=-5, max_value=36).map(lambda days: days * 86_400 * 10**6),
    st.integers(min_value=-5 * 24, max_value=36 * 24).map(lambda hours: hours * 3_600 * 10**6 + 250_000),
)
sizes = st.one_of(
    st.sampled_from([0, 1, GB, 10**12, 10**21 + 1]),
    st.integers(min_value=0, max_value=2**50),
)
allowances = st.one_of(
    st.sampled_from([0, 1, GB // 2, 100 * GB, 100 * 2**30, 12_345_678_901, 10**15]),
    st.integers(min_value=0, max_value=2**50),
)
# When a plan takes effect: since always, or around the period (before, at or after its start).
effective = st.one_of(st.just(ALWAYS), offsets.map(lambda offset: OCT.start + offset * US))


@st.composite
def plan_history(draw: st.DrawFn, account: str) -> list[Subscription]:
    starts = draw(st.lists(effective, min_size=1, max_size=3, unique=True))
    return [Subscription(account, draw(allowances), start) for start in starts]


@st.composite
def resource_samples(draw: st.DrawFn, resource_id: str) -> list[SizeSample]:
    account = draw(st.sampled_from(["acct-a", "acct-b", "acct-c"]))
    kind: Kind = draw(st.sampled_from(["volume", "bucket"]))
    times = sorted(draw(st.sets(offsets, min_size=1, max_size=8)))
    deleted = len(times) > 1 and draw(st.booleans())
    return [
        SizeSample(
            resource_id,
            account,
            kind,
            OCT.start + offset * US,
            None if deleted and index == len(times) - 1 else draw(sizes),
        )
        for index, offset in enumerate(times)
    ]


@st.composite
def inventories(draw: st.DrawFn) -> tuple[list[SizeSample], list[Subscription]]:
    count = draw(st.integers(min_value=0, max_value=8))
    ids = draw(st.lists(st.sampled_from(["vol-1", "vol-2", "bkt-1", "b-9", "z", "vol-10"]), unique=True))
    ids = [*ids, *(f"r-{n}" for n in range(count))]
    samples = [sample for resource_id in ids for sample in draw(resource_samples(resource_id))]
    accounts = draw(st.lists(st.sampled_from(["acct-a", "acct-b", "acct-c", "acct-idle"]), unique=True))
    return samples, [plan for account in accounts for plan in draw(plan_history(account))]


def grouped(samples: list[SizeSample], subscriptions: list[Subscription]) -> list[AccountSamples]:
    """What the store hands the stream: accounts in order, each resource's samples in time order,
    each account with its plan in effect at the period's start."""
    by_account: dict[str, dict[str, list[SizeSample]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        by_account[sample.account_id][sample.resource_id].append(sample)
    plans = {
        account: in_effect(history, OCT.start) for account, history in plan_histories(subscriptions).items()
    }
    return [
        AccountSamples(
            account_id,
            plans.get(account_id),
            [
                ResourceSamples(
                    resource_id,
                    history[0].kind,
                    [s.at for s in sorted(history, key=lambda s: s.at)],
                    [s.size_bytes for s in sorted(history, key=lambda s: s.at)],
                )
                for resource_id, history in sorted(resources.items())
            ],
        )
        for account_id, resources in sorted(by_account.items())
    ]


def exact(records: list[UsageRecord]) -> list[dict[str, Any]]:
    """Records as JSON values: quantities compared digit for digit, not just numerically."""
    return [record.model_dump(mode="json") for record in records]


@settings(max_examples=400, deadline=None)
@given(inventories())
def test_the_stream_gives_exactly_storage_usages_records(
    inventory: tuple[list[SizeSample], list[Subscription]],
) -> None:
    samples, subscriptions = inventory

    expected = storage_usage(samples, subscriptions, OCT)

    assert exact(list(stream_storage_usage(grouped(samples, subscriptions), OCT))) == exact(expected)


@settings(max_examples=100, deadline=None)
@given(inventories())
def test_samples_at_or_after_the_period_end_change_nothing(
    inventory: tuple[list[SizeSample], list[Subscription]],
) -> None:
    samples, subscriptions = inventory
    before_end = [sample for sample in samples if sample.at < OCT.end]

    assert exact(list(stream_storage_usage(grouped(before_end, subscriptions), OCT))) == exact(
        storage_usage(samples, subscriptions, OCT)
    )


def at(day: int, micro: int = 0) -> datetime:
    return datetime(2026, 10, day, 0, 0, 0, micro, tzinfo=UTC)


def resource(times: list[datetime], sizes: list[int | None], resource_id: str = "vol-x") -> ResourceSamples:
    return ResourceSamples(resource_id, "volume", times, sizes)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (resource([at(1), at(2), at(3)], [GB, None, GB]), "a sample comes after its deletion"),
        (resource([at(1)], [None]), "without any earlier size"),
        (resource([at(2), at(1)], [GB, GB]), "do not strictly increase"),
        (resource([at(1), at(1)], [GB, GB]), "do not strictly increase"),
        (resource([at(1), at(2)], [GB]), "2 sample time"),
        (resource([at(1)], [GB, GB]), "1 sample time"),
        (resource([], []), "0 sample time"),
    ],
)
def test_an_impossible_history_is_an_error_naming_the_resource(
    samples: ResourceSamples, message: str
) -> None:
    with pytest.raises(ValueError, match=rf"resource 'vol-x'.*{message}"):
        account_usage(AccountSamples("acct-a", None, [samples]), OCT)


def test_accounts_out_of_order_or_twice_are_refused() -> None:
    a = AccountSamples("acct-a", None, [resource([at(1)], [GB])])
    b = AccountSamples("acct-b", None, [resource([at(1)], [GB])])

    with pytest.raises(ValueError, match="'acct-a' after 'acct-b'"):
        list(stream_storage_usage([b, a], OCT))
    with pytest.raises(ValueError, match="'acct-a' after 'acct-a'"):
        list(stream_storage_usage([a, a], OCT))
    with pytest.raises(ValueError, match="resource 'vol-x': listed twice for account 'acct-a'"):
        account_usage(AccountSamples("acct-a", None, [resource([at(1)], [GB]), resource([at(2)], [GB])]), OCT)


def stored(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        samples = conn.execute("SELECT rowid, * FROM samples ORDER BY rowid").fetchall()
        plans = conn.execute("SELECT rowid, * FROM plans ORDER BY rowid").fetchall()
    return samples, plans


async def streamed(path: Path) -> list[UsageRecord]:
    return [record async for record in StorageService(path).usage(OCT)]


def listed(path: Path) -> list[UsageRecord]:
    with StorageStore(path, read_only=True) as store:
        return storage_usage(store.samples(before=OCT.end), store.subscriptions(), OCT)


async def test_the_service_streams_storage_usage_of_its_store(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    seed(path, OCT, accounts=80)

    assert exact(await streamed(path)) == exact(listed(path))


async def test_a_store_without_the_usage_index_gives_the_same_answer(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    seed(path, OCT, accounts=20)
    expected = exact(await streamed(path))
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX samples_for_usage")

    assert exact(await streamed(path)) == expected


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ("UPDATE samples SET account_id = 'acct-z' WHERE rowid = 2", "under two accounts or of two kinds"),
        ("UPDATE samples SET kind = 'bucket' WHERE rowid = 2", "listed twice for account 'acct-a'"),
        ("UPDATE samples SET size_bytes = NULL WHERE rowid = 1", "a sample comes after its deletion"),
    ],
)
async def test_rows_the_store_would_never_write_are_an_error(
    tmp_path: Path, update: str, message: str
) -> None:
    path = tmp_path / "storage.sqlite3"
    with StorageStore(path) as store:
        store.record_samples(
            [SizeSample("vol-1", "acct-a", "volume", at(day), GB * day) for day in (1, 2, 3)]
            + [SizeSample("vol-2", "acct-b", "volume", at(1), GB)]
        )
    with sqlite3.connect(path) as conn:
        conn.execute(update)

    with pytest.raises(ValueError, match=rf"resource 'vol-1'.*{message}"):
        await streamed(path)


def test_the_bulk_seed_writes_exactly_the_rows_of_the_sample_by_sample_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = tmp_path / "fast.sqlite3", tmp_path / "slow.sqlite3"
    fast_summary = seed(fast, OCT, accounts=120)

    def one_by_one(store: StorageStore, samples: list[SizeSample], subscriptions: list[Subscription]) -> int:
        with store.transaction():
            store.clear()
            written = store.record_samples(samples)
            for plan in subscriptions:
                store.set_subscription(
                    plan.account_id, plan.included_bytes, effective_from=plan.effective_from
                )
        return written

    monkeypatch.setattr(StorageStore, "replace_all", one_by_one)
    slow_summary = seed(slow, OCT, accounts=120)

    assert fast_summary.samples == slow_summary.samples > 0
    assert stored(fast) == stored(slow)


def vol(resource_id: str, when: datetime, size: int | None, account: str = "acct-a") -> SizeSample:
    return SizeSample(resource_id, account, "volume", when, size)


def test_replace_all_keeps_an_identical_sample_once_and_replaces_everything(tmp_path: Path) -> None:
    with StorageStore(tmp_path / "storage.sqlite3") as store:
        store.record_samples([vol("old-1", at(1), GB)])
        store.set_subscription("acct-old", 5)

        written = store.replace_all(
            [vol("vol-1", at(1), GB), vol("vol-1", at(1), GB), vol("vol-1", at(3), None)],
            [Subscription("acct-a", 12_500_000_000), Subscription("acct-a", 0, at(20))],
        )

        assert written == 2
        assert store.samples() == [vol("vol-1", at(1), GB), vol("vol-1", at(3), None)]
        assert store.subscriptions() == [
            Subscription("acct-a", 12_500_000_000),
            Subscription("acct-a", 0, at(20)),
        ]


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([vol("vol-1", at(1), GB), vol("vol-1", at(1), 2 * GB)], "a different sample is already stored"),
        ([vol("vol-1", at(1), GB), vol("vol-1", at(2), GB, "acct-z")], "account_id 'acct-z' differs"),
        (
            [vol("vol-1", at(1), GB), SizeSample("vol-1", "acct-a", "bucket", at(2), GB)],
            "kind 'bucket' differs",
        ),
        ([vol("vol-1", at(1), GB), vol("vol-1", at(2), None), vol("vol-1", at(3), GB)], "after the resource"),
        ([vol("vol-1", at(3), GB), vol("vol-1", at(2), None)], "after the resource's deletion"),
        ([vol("vol-1", at(2), None), vol("vol-1", at(3), None)], "after the resource's deletion"),
    ],
)
def test_replace_all_refuses_what_record_samples_refuses_and_changes_nothing(
    tmp_path: Path, samples: list[SizeSample], message: str
) -> None:
    with StorageStore(tmp_path / "storage.sqlite3") as store:
        store.record_samples([vol("old-1", at(1), GB)])
        with pytest.raises(ValueError, match=rf"resource 'vol-1'.*{message}"):
            store.replace_all(samples, {})
        with pytest.raises(ValueError, match="resource 'vol-1'"):  # the slow path refuses them too
            StorageStore(tmp_path / "other.sqlite3").record_samples(samples)

        assert store.samples() == [vol("old-1", at(1), GB)]


def test_replace_all_checks_its_arguments(tmp_path: Path) -> None:
    with StorageStore(tmp_path / "storage.sqlite3") as store:
        with pytest.raises(ValueError, match="sample must be a SizeSample"):
            store.replace_all([("vol-1", "acct-a", "volume", at(1), GB)], {})  # type: ignore[list-item]
        with pytest.raises(ValueError, match="account 'acct-a' has two plans effective from 0001-01-01"):
            store.replace_all([], [Subscription("acct-a", 1), Subscription("acct-a", 2)])
