"""The storage service's own SQLite database of size samples and subscriptions (stdlib sqlite3).

Times are stored as UTC ISO-8601 text with microseconds (``2026-10-01T00:00:00.000000+00:00``):
fixed width, so text order is time order. Quantities are stored as decimal text, never floats.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from workers.storage import bulk, scan
from workers.storage.usage import AccountSamples, SizeSample, Subscription

# Secondary indexes, by name (the bulk path drops them and builds them again after its inserts).
_INDEXES: Final = {
    "samples_by_time": "CREATE INDEX IF NOT EXISTS samples_by_time ON samples (at)",
    # Covers the usage scan (workers.storage.scan): an account's samples, resource by resource, in time order.
    "samples_for_usage": "CREATE INDEX IF NOT EXISTS samples_for_usage "
    "ON samples (account_id, resource_id, kind, at, size_bytes)",
}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS samples (
    resource_id TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('volume', 'bucket')),
    at          TEXT NOT NULL,
    size_bytes  INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
    PRIMARY KEY (resource_id, at)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id        TEXT PRIMARY KEY,
    included_gb_month TEXT NOT NULL
);
""" + "".join(f"{index};\n" for index in _INDEXES.values())


def _time_text(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _parse_included(account_id: str, value: object) -> Decimal:
    where = f"subscription of account {account_id!r}: included_gb_month"
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{where} {value!r} is not a decimal number") from None
    raise ValueError(f"{where} must be a Decimal, int or decimal string, got {value!r}")


class StorageStore:
    """Size samples and subscriptions in one SQLite file; creates the schema if it is missing.

    ``read_only=True`` opens an existing database without writing to it (no schema creation) and
    raises ``FileNotFoundError`` if the file does not exist, so a mistyped path cannot pass for an
    empty inventory. Use one store per thread: sqlite3 connections are not shared across threads,
    unless ``any_thread=True`` and the caller makes sure two threads never use it at once.
    """

    def __init__(self, path: Path | str, *, read_only: bool = False, any_thread: bool = False) -> None:
        self.path = Path(path)
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"storage database {self.path} does not exist")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=not any_thread
            )
        else:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not any_thread)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them are committed, or none. Nested use joins the outer transaction."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        self._conn.commit()

    def record_sample(self, sample: SizeSample) -> bool:
        """Store one sample; returns False if the identical sample was already stored.

        Raises ``ValueError`` naming the field when the sample contradicts what is stored: another
        sample of the resource at the same instant, another account or kind for the resource, a
        sample after the resource's deletion, or a deletion before a stored sample.
        """
        with self.transaction():
            return self._insert(sample)

    def record_samples(self, samples: Iterable[SizeSample]) -> int:
        """Store many samples in one transaction (all or none); returns how many were new."""
        with self.transaction():
            return sum(self._insert(sample) for sample in samples)

    def replace_all(
        self, samples: Iterable[SizeSample], subscriptions: Mapping[str, Decimal | int | str]
    ) -> int:
        """Replace every sample and subscription, in one transaction: the bulk path (seeding).

        Stores exactly the rows that ``clear()``, ``record_samples(samples)`` and one
        ``set_subscription`` per item would, with the same rules, but checks the samples against
        each other in memory (``workers.storage.bulk``) instead of against the database one by one.
        Returns how many samples were stored.
        """
        rows = bulk.checked_rows(samples, _time_text)
        plans = [
            (
                account_id,
                str(Subscription(account_id, _parse_included(account_id, included)).included_gb_month),
            )
            for account_id, included in subscriptions.items()
        ]
        with self.transaction():
            # Building an index once after the inserts is much faster than updating it on each one.
            for name in _INDEXES:
                self._conn.execute(f"DROP INDEX IF EXISTS {name}")
            self.clear()
            self._conn.executemany(
                "INSERT INTO samples (resource_id, account_id, kind, at, size_bytes) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            for statement in _INDEXES.values():
                self._conn.execute(statement)
            self._conn.executemany(
                "INSERT INTO subscriptions (account_id, included_gb_month) VALUES (?, ?)", plans
            )
        return len(rows)

    def _insert(self, sample: SizeSample) -> bool:
        if not isinstance(sample, SizeSample):
            raise ValueError(f"sample must be a SizeSample, got {type(sample).__name__}")
        where = f"resource {sample.resource_id!r}"
        at = _time_text(sample.at)
        same_time = self._conn.execute(
            "SELECT account_id, kind, size_bytes FROM samples WHERE resource_id = ? AND at = ?",
            (sample.resource_id, at),
        ).fetchone()
        if same_time is not None:
            if tuple(same_time) == (sample.account_id, sample.kind, sample.size_bytes):
                return False
            raise ValueError(f"{where}: a different sample is already stored at {at}")
        owner = self._conn.execute(
            "SELECT account_id, kind FROM samples WHERE resource_id = ? LIMIT 1", (sample.resource_id,)
        ).fetchone()
        if owner is not None:
            if owner[0] != sample.account_id:
                raise ValueError(
                    f"{where}: account_id {sample.account_id!r} differs from the stored {owner[0]!r}"
                )
            if owner[1] != sample.kind:
                raise ValueError(f"{where}: kind {sample.kind!r} differs from the stored {owner[1]!r}")
        deleted = self._conn.execute(
            "SELECT at FROM samples WHERE resource_id = ? AND size_bytes IS NULL AND at < ? LIMIT 1",
            (sample.resource_id, at),
        ).fetchone()
        if deleted is not None:
            raise ValueError(f"{where}: at {at} is after the resource's deletion at {deleted[0]}")
        if sample.size_bytes is None:
            later = self._conn.execute(
                "SELECT at FROM samples WHERE resource_id = ? AND at > ? LIMIT 1", (sample.resource_id, at)
            ).fetchone()
            if later is not None:
                raise ValueError(
                    f"{where}: size_bytes None (deletion) at {at} precedes a sample at {later[0]}"
                )
        self._conn.execute(
            "INSERT INTO samples (resource_id, account_id, kind, at, size_bytes) VALUES (?, ?, ?, ?, ?)",
            (sample.resource_id, sample.account_id, sample.kind, at, sample.size_bytes),
        )
        return True

    def set_subscription(self, account_id: str, included_gb_month: Decimal | int | str) -> None:
        """Create or replace the account's subscription; floats are refused (quantities must be exact)."""
        subscription = Subscription(account_id, _parse_included(account_id, included_gb_month))
        with self.transaction():
            self._conn.execute(
                "INSERT INTO subscriptions (account_id, included_gb_month) VALUES (?, ?) "
                "ON CONFLICT (account_id) DO UPDATE SET included_gb_month = excluded.included_gb_month",
                (subscription.account_id, str(subscription.included_gb_month)),
            )

    def remove_subscription(self, account_id: str) -> bool:
        """Delete the account's subscription; returns False if it had none."""
        with self.transaction():
            cursor = self._conn.execute("DELETE FROM subscriptions WHERE account_id = ?", (account_id,))
        return cursor.rowcount > 0

    def clear(self) -> None:
        """Delete every sample and subscription (the schema stays)."""
        with self.transaction():
            self._conn.execute("DELETE FROM samples")
            self._conn.execute("DELETE FROM subscriptions")

    def samples(self, *, before: datetime | None = None) -> list[SizeSample]:
        """Every sample, ordered by (resource_id, at); ``before`` keeps only samples taken earlier.

        Samples at or after a period's end cannot change its usage, so ``before=period.end`` is enough
        to compute that period.
        """
        query = "SELECT resource_id, account_id, kind, at, size_bytes FROM samples"
        params: tuple[str, ...] = ()
        if before is not None:
            if before.utcoffset() is None:
                raise ValueError(f"before must be a timezone-aware datetime, got {before!r}")
            query += " WHERE at < ?"
            params = (_time_text(before),)
        rows = self._conn.execute(query + " ORDER BY resource_id, at", params).fetchall()
        return [
            SizeSample(resource_id, account_id, kind, datetime.fromisoformat(at), size_bytes)
            for resource_id, account_id, kind, at, size_bytes in rows
        ]

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, ordered by account_id."""
        rows = self._conn.execute(
            "SELECT account_id, included_gb_month FROM subscriptions ORDER BY account_id"
        ).fetchall()
        return [Subscription(account_id, Decimal(included)) for account_id, included in rows]

    def account_samples(self, *, before: datetime) -> Generator[AccountSamples, None, None]:
        """Every account's samples taken before ``before``, with its subscription, account by account.

        Accounts come in increasing ``account_id`` order, each resource's samples in time order, one
        account in memory at a time, all of it from one snapshot (see ``workers.storage.scan``).
        """
        if before.utcoffset() is None:
            raise ValueError(f"before must be a timezone-aware datetime, got {before!r}")
        return scan.account_samples(self._conn, _time_text(before))
