"""Storage plans: allowances in bytes written with their unit, and plans that change over time."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from contracts import Period, UsageRecord
from workers.sdk.service import usage_stream
from workers.storage.plans import ALWAYS, Subscription, in_effect, parse_bytes
from workers.storage.service import StorageService
from workers.storage.store import StorageStore
from workers.storage.usage import AccountSamples, SizeSample, account_usage

OCT, NOV, DEC = Period.month("2026-10"), Period.month("2026-11"), Period.month("2026-12")
GB = 10**9


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100 GB", 100 * 10**9),
        ("100 GiB", 100 * 2**30),
        ("100GB", 100 * 10**9),
        (" 1.5 kB ", 1500),
        ("0.5 KiB", 512),
        ("7 B", 7),
        ("2 TB", 2 * 10**12),
        ("1 TiB", 2**40),
        ("0 GB", 0),
    ],
)
def test_an_allowance_is_written_with_its_unit(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100", "is not an amount with its unit, such as '100 GB'"),  # GB or GiB? it must say
        ("-1 GB", "is not an amount with its unit"),
        ("1e3 GB", "is not an amount with its unit"),
        ("100 KB", "unknown unit 'KB'"),  # 1000 or 1024? kB and KiB say
        ("100 gb", "unknown unit 'gb'"),
        ("1.5 B", "is not a whole number of bytes"),
        ("0.1 KiB", "is not a whole number of bytes"),
        ("1" * 41 + " B", "is too large"),
        ("\u0661\u0660 GB", "is not an amount with its unit"),  # digits, but not ASCII ones
    ],
)
def test_an_allowance_without_a_clear_unit_or_whole_bytes_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bytes(text)


def test_the_plan_in_effect_is_the_latest_that_started_at_or_before_the_moment() -> None:
    always, mid_oct, nov = (
        Subscription("acct-a", 100 * GB),
        Subscription("acct-a", 10 * GB, datetime(2026, 10, 15, tzinfo=UTC)),
        Subscription("acct-a", 0, NOV.start),
    )
    history = [nov, always, mid_oct]  # in any order
    assert in_effect(history, OCT.start) == always
    assert in_effect(history, NOV.start) == nov  # a plan starting exactly then is in effect
    assert in_effect(history, NOV.start - timedelta(microseconds=1)) == mid_oct
    assert in_effect([mid_oct], OCT.start) is None
    assert always.effective_from == ALWAYS


def test_effective_from_is_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    plan = Subscription("acct-a", GB, datetime(2026, 10, 1, 2, tzinfo=plus_two))
    assert plan.effective_from == OCT.start and plan.effective_from.tzinfo is UTC


async def answer(path: Path, period: Period) -> list[UsageRecord]:
    return [record async for record in usage_stream(StorageService(path).usage(period))]


async def test_each_period_is_answered_with_the_plan_in_effect_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    with StorageStore(path) as store:
        store.record_sample(
            SizeSample("vol-1", "acct-a", "volume", datetime(2026, 9, 1, tzinfo=UTC), 200 * GB)
        )
        store.set_subscription("acct-a", "100 GB")
        october = await answer(path, OCT)
        # Later the plan changes: 150 GB from the middle of October, none from December.
        store.set_subscription("acct-a", "150 GB", effective_from=datetime(2026, 10, 15, 12, tzinfo=UTC))
        store.set_subscription("acct-a", 0, effective_from=DEC.start)

    def allowance(records: list[UsageRecord], period: Period) -> int:
        [record] = records
        return int(record.attributes["included_byte_seconds"]) // int(period.seconds)

    assert allowance(october, OCT) == 100 * GB
    replayed = await answer(path, OCT)
    assert replayed == october  # a replay of October gets October's plan, not today's
    assert allowance(await answer(path, NOV), NOV) == 150 * GB  # a change mid-period: from the next
    december = await answer(path, DEC)
    assert allowance(december, DEC) == 0
    [record] = december
    assert record.quantity == 200 * GB * DEC.seconds


async def test_a_period_before_any_plan_has_no_allowance(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    with StorageStore(path) as store:
        store.record_sample(SizeSample("vol-1", "acct-a", "volume", datetime(2026, 9, 1, tzinfo=UTC), GB))
        store.set_subscription("acct-a", "100 GB", effective_from=NOV.start)
    [october] = await answer(path, OCT)
    [november] = await answer(path, NOV)
    assert (october.quantity, november.quantity) == (GB * OCT.seconds, Decimal(0))


def old_store(path: Path, included_gb_month: str) -> None:
    """A file of the schema before plans: one subscription per account, in GB of 10^9 bytes."""
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE samples (
                resource_id TEXT NOT NULL, account_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('volume', 'bucket')), at TEXT NOT NULL,
                size_bytes INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
                PRIMARY KEY (resource_id, at)
            );
            CREATE TABLE subscriptions (account_id TEXT PRIMARY KEY, included_gb_month TEXT NOT NULL);
            """
        )
        conn.execute(
            "INSERT INTO samples VALUES ('vol-1', 'acct-a', 'volume', '2026-09-01T00:00:00.000000+00:00', ?)",
            (150 * GB,),
        )
        conn.execute(
            "INSERT INTO subscriptions VALUES ('acct-a', ?), ('acct-b', '12.5')", (included_gb_month,)
        )
    conn.close()


async def test_an_older_file_is_migrated_when_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    old_store(path, "100")
    with pytest.raises(ValueError, match="is not migrated to plans yet: open it for writing once"):
        StorageStore(path, read_only=True)

    StorageStore(path).close()  # as `python -m workers.storage serve` does at start

    with StorageStore(path, read_only=True) as store:
        assert store.subscriptions() == [
            Subscription("acct-a", 100 * GB, ALWAYS),
            Subscription("acct-b", 12_500_000_000, ALWAYS),
        ]
    [record] = await answer(path, OCT)
    assert record.quantity == 50 * GB * OCT.seconds  # the 100 GB it was always given
    StorageStore(path).close()  # opening it again changes nothing
    with StorageStore(path, read_only=True) as store:
        assert len(store.subscriptions()) == 2


def test_an_older_allowance_that_is_not_whole_bytes_stops_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "storage.sqlite3"
    old_store(path, "0.0000000001")
    with pytest.raises(ValueError, match=r"account 'acct-a': included_gb_month 0.0000000001 is not a whole"):
        StorageStore(path)
    with sqlite3.connect(path) as conn:  # nothing half done: the old table is still there
        assert conn.execute("SELECT count(*) FROM subscriptions").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM plans").fetchone() == (0,)
    conn.close()
    with pytest.raises(ValueError, match="is not migrated to plans yet"):  # never served without it
        StorageStore(path, read_only=True)


def test_the_stream_refuses_a_plan_that_starts_after_the_period_start() -> None:
    later = Subscription("acct-a", GB, OCT.start + timedelta(microseconds=1))
    with pytest.raises(
        ValueError, match=r"account 'acct-a': its plan takes effect at 2026-10-01T00:00:00\.000001"
    ):
        account_usage(AccountSamples("acct-a", later, []), OCT)
    assert account_usage(AccountSamples("acct-a", Subscription("acct-a", GB, OCT.start), []), OCT) == []
