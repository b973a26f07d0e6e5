"""The storage service's SQLite store, its seed data and its UsageService, on real files."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts import Period
from workers.sdk.service import UsageService, usage_stream
from workers.storage.__main__ import app
from workers.storage.plans import Subscription
from workers.storage.seed import seed
from workers.storage.service import StorageService
from workers.storage.store import StorageStore
from workers.storage.usage import SizeSample, storage_usage

OCT = Period.month("2026-10")
GB = 10**9


def at(day: int, hour: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, 0, 0, micro, tzinfo=UTC)


def vol(resource_id: str, when: datetime, size: int | None, account: str = "acct-a") -> SizeSample:
    return SizeSample(resource_id, account, "volume", when, size)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StorageStore]:
    with StorageStore(tmp_path / "storage.sqlite3") as opened:
        yield opened


def test_round_trip_through_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "storage.sqlite3"
    path.parent.mkdir()
    samples = [
        vol("vol-2", at(3, 5, 123_456), 7),
        vol("vol-1", datetime(2026, 10, 2, 2, tzinfo=timezone(timedelta(hours=2))), 10 * GB),
        vol("vol-1", at(20, micro=1), None),
        SizeSample("bkt-1", "acct-b", "bucket", at(1), 0),
    ]
    with StorageStore(path) as store:
        assert store.record_samples(samples) == 4
        store.set_subscription("acct-b", "12.5 GB")
        store.set_subscription("acct-a", 100)
        store.set_subscription("acct-a", "150 GiB")  # replaces
        store.set_subscription("acct-a", "2 TB", effective_from=at(15))  # a later plan: history
    with StorageStore(path, read_only=True) as reopened:
        assert reopened.samples() == sorted(samples, key=lambda s: (s.resource_id, s.at))
        assert reopened.samples()[1].at == at(2)  # stored in UTC
        assert reopened.subscriptions() == [
            Subscription("acct-a", 150 * 2**30),
            Subscription("acct-a", 2 * 10**12, at(15)),
            Subscription("acct-b", 12_500_000_000),
        ]
        assert [s.resource_id for s in reopened.samples(before=at(3))] == ["bkt-1", "vol-1"]


def test_times_are_utc_text_with_microseconds_so_text_order_is_time_order(store: StorageStore) -> None:
    store.record_samples([vol("vol-1", at(1, 9), GB), vol("vol-1", at(1, 10, micro=5), 2 * GB)])
    rows = store._conn.execute("SELECT at FROM samples ORDER BY at").fetchall()
    assert [row[0] for row in rows] == [
        "2026-10-01T09:00:00.000000+00:00",
        "2026-10-01T10:00:00.000005+00:00",
    ]


def test_recording_the_same_sample_twice_is_harmless(store: StorageStore) -> None:
    assert store.record_sample(vol("vol-1", at(1), GB)) is True
    assert store.record_sample(vol("vol-1", at(1), GB)) is False
    assert store.record_samples([vol("vol-1", at(1), GB), vol("vol-1", at(2), 2 * GB)]) == 1
    assert len(store.samples()) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (vol("vol-1", at(1), 2 * GB), r"resource 'vol-1': a different sample is already stored"),
        (vol("vol-1", at(2), GB, account="acct-z"), r"resource 'vol-1': account_id 'acct-z' differs"),
        (SizeSample("vol-1", "acct-a", "bucket", at(2), GB), r"resource 'vol-1': kind 'bucket' differs"),
        (vol("vol-1", at(6), GB), r"resource 'vol-1': at .* is after the resource's deletion"),
        (vol("vol-1", at(4), None), r"resource 'vol-1': size_bytes None \(deletion\) .* precedes a sample"),
    ],
)
def test_samples_contradicting_the_stored_history_are_rejected(
    store: StorageStore, bad: SizeSample, message: str
) -> None:
    store.record_samples([vol("vol-1", at(1), GB), vol("vol-1", at(4, 12), GB), vol("vol-1", at(5), None)])
    with pytest.raises(ValueError, match=message):
        store.record_sample(bad)
    assert len(store.samples()) == 3


def test_a_bad_batch_stores_nothing(store: StorageStore) -> None:
    with pytest.raises(ValueError, match="account_id"):
        store.record_samples(
            [vol("vol-1", at(1), GB), vol("vol-2", at(1), GB), vol("vol-1", at(2), GB, "acct-z")]
        )
    assert store.samples() == []


def test_bad_input_is_rejected_naming_the_field(store: StorageStore) -> None:
    with pytest.raises(ValueError, match="size_bytes -5 is negative"):
        store.record_sample(vol("vol-1", at(1), -5))
    with pytest.raises(ValueError, match="at must be a timezone-aware datetime"):
        store.record_sample(vol("vol-1", datetime(2026, 10, 1), GB))
    with pytest.raises(ValueError, match="sample must be a SizeSample"):
        store.record_sample(("vol-1", "acct-a", "volume", at(1), GB))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="account 'acct-a': included 'lots' is not an amount with its unit"):
        store.set_subscription("acct-a", "lots")
    with pytest.raises(ValueError, match="included '100' is not an amount with its unit, such as '100 GB'"):
        store.set_subscription("acct-a", "100")  # GB or GiB? The plan must say.
    with pytest.raises(ValueError, match="included must be whole bytes"):
        store.set_subscription("acct-a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="included must be whole bytes"):
        store.set_subscription("acct-a", Decimal(100))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="included_bytes -1 is not between 0"):
        store.set_subscription("acct-a", -1)
    with pytest.raises(ValueError, match="account_id must be a non-empty string"):
        store.set_subscription("", "1 GB")
    with pytest.raises(ValueError, match="effective_from must be a timezone-aware"):
        store.set_subscription("acct-a", "1 GB", effective_from=datetime(2026, 10, 1))
    with pytest.raises(ValueError, match="before must be a timezone-aware datetime"):
        store.samples(before=datetime(2026, 10, 1))
    assert store.samples() == [] and store.subscriptions() == []


def test_subscriptions_can_be_removed_and_everything_cleared(store: StorageStore) -> None:
    store.record_sample(vol("vol-1", at(1), GB))
    store.set_subscription("acct-a", "100 GB")
    store.set_subscription("acct-a", "50 GB", effective_from=at(10))
    assert store.remove_subscription("acct-a", effective_from=at(10)) is True  # that entry only
    assert store.subscriptions() == [Subscription("acct-a", 100 * GB)]
    assert store.remove_subscription("acct-a") is True
    assert store.remove_subscription("acct-a") is False
    store.set_subscription("acct-a", "100 GB")
    store.clear()
    assert store.samples() == [] and store.subscriptions() == []


def test_read_only_store_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StorageStore(tmp_path / "missing.sqlite3", read_only=True)
    assert not (tmp_path / "missing.sqlite3").exists()


def _contents(path: Path) -> tuple[list[SizeSample], list[Subscription]]:
    with StorageStore(path, read_only=True) as store:
        return store.samples(), store.subscriptions()


def test_seed_is_deterministic_and_reseeding_does_not_duplicate(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3", tmp_path / "c.sqlite3"
    summary = seed(first, OCT)
    assert seed(second, OCT) == replace(summary, path=second)
    assert seed(first, OCT) == summary  # seeding the same file again replaces, never duplicates
    assert _contents(first) == _contents(second)
    seed(other, OCT, rng_seed=12)
    assert _contents(other) != _contents(first)
    assert summary.samples == len(_contents(first)[0]) <= 5000
    assert summary.accounts == 40 and 10 <= summary.subscriptions <= 30


def test_seed_data_computes_a_varied_realistic_inventory(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    seed(path, OCT, accounts=40)
    samples, subscriptions = _contents(path)
    records = storage_usage(samples, subscriptions, OCT)
    accounts = {r.account_id for r in records}
    assert len(accounts) >= 24 and accounts <= {f"acct-{n:04d}" for n in range(1, 41)}
    assert {r.metric for r in records} == {"block_storage", "object_storage"}
    listed = {r.resource_id for r in records}
    assert {s.resource_id for s in samples} - listed, "some resources were deleted before the period"
    deleted_inside = {s.resource_id for s in samples if s.size_bytes is None and OCT.contains(s.at)}
    assert deleted_inside and deleted_inside <= listed
    assert any(r.attributes["gross_byte_seconds"] == "0" for r in records), "an empty bucket"
    subscribed = {s.account_id for s in subscriptions}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for record in records:
        totals[record.account_id] += record.quantity
    under = {a for a in subscribed & accounts if totals[a] == 0}
    over = {a for a in subscribed & accounts if totals[a] > 0}
    assert under and over, "some subscribed accounts stay under their allowance, some go over"


async def test_storage_service_answers_from_its_database(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    with StorageStore(path) as store:
        store.record_samples(
            [vol("vol-1", at(1), GB), vol("vol-1", datetime(2026, 11, 2, tzinfo=UTC), 5 * GB)]
        )
        store.set_subscription("acct-a", "1 GB")
    service: UsageService = StorageService(path)
    assert service.name == "storage"
    records = [record async for record in usage_stream(service.usage(OCT))]
    assert len(records) == 1 and records[0].quantity == 0
    seed(path, OCT)
    samples, subscriptions = _contents(path)
    streamed = [record async for record in usage_stream(service.usage(OCT))]
    assert streamed == storage_usage(samples, subscriptions, OCT)  # in the same order, too


async def test_storage_service_fails_loudly_without_a_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await anext(usage_stream(StorageService(tmp_path / "missing.sqlite3").usage(OCT)))
    assert not (tmp_path / "missing.sqlite3").exists()


def test_seed_command_writes_the_database_and_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "var" / "storage.sqlite3"
    result = CliRunner().invoke(
        app, ["seed", "--period", "2026-10", "--accounts", "5"], env={"RECKON_STORAGE_DB": str(path)}
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and "5 accounts" in result.output
    assert _contents(path)[0]
    bad = CliRunner().invoke(app, ["seed", "--period", "October", "--db", str(path)])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output
