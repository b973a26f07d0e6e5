"""The storage service's own SQLite database of size samples and plans (stdlib sqlite3).

Times are stored as UTC ISO-8601 text with microseconds (``2026-10-01T00:00:00.000000+00:00``):
fixed width, so text order is time order. Sizes and allowances are whole bytes (INTEGER).

A plan is a row per (account, ``effective_from``): the account's history of allowances. A file of
the older schema (one ``subscriptions`` row per account, ``included_gb_month`` in 10^9-byte GB,
no history) is migrated when it is opened for writing: each row becomes a plan of as many bytes,
in effect since ``ALWAYS`` — the allowance it always had.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from workers.storage import bulk, scan
from workers.storage.plans import ALWAYS, Subscription, allowance_bytes, plan_histories
from workers.storage.usage import AccountSamples, SizeSample

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
CREATE TABLE IF NOT EXISTS plans (
    account_id     TEXT NOT NULL,
    effective_from TEXT NOT NULL,
    included_bytes INTEGER NOT NULL CHECK (included_bytes >= 0),
    PRIMARY KEY (account_id, effective_from)
);
""" + "".join(f"{index};\n" for index in _INDEXES.values())


def _time_text(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _plan(account_id: str, included: int | str, effective_from: datetime) -> Subscription:
    try:
        size = allowance_bytes(included)
    except ValueError as error:
        raise ValueError(f"subscription of account {account_id!r}: included {error}") from None
    return Subscription(account_id, size, effective_from)


def _plan_row(plan: Subscription) -> tuple[str, str, int]:
    return plan.account_id, _time_text(plan.effective_from), plan.included_bytes


def _migrate_subscriptions(conn: sqlite3.Connection) -> None:
    """Turn the older schema's ``subscriptions`` table into plans in effect since ``ALWAYS``.

    Call inside a write transaction (another process may have migrated the file since it was checked).
    """
    if not _has_table(conn, "subscriptions"):
        return
    plans: list[tuple[str, str, int]] = []
    for account_id, included in conn.execute("SELECT account_id, included_gb_month FROM subscriptions"):
        size = Fraction(Decimal(included)) * 10**9  # that column always meant GB of 10^9 bytes
        if size.denominator != 1:
            raise ValueError(
                f"subscription of account {account_id!r}: included_gb_month {included} is not a whole "
                "number of bytes; correct it so that the store can migrate to plans in bytes"
            )
        plans.append(_plan_row(Subscription(account_id, int(size))))
    conn.executemany("INSERT INTO plans (account_id, effective_from, included_bytes) VALUES (?, ?, ?)", plans)
    conn.execute("DROP TABLE subscriptions")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None


class StorageStore:
    """Size samples and plans in one SQLite file; creates (or migrates) the schema if needed.

    ``read_only=True`` opens an existing database without writing to it (no schema creation) and
    raises ``FileNotFoundError`` if the file does not exist, so a mistyped path cannot pass for an
    empty inventory, and ``ValueError`` if it is not migrated to plans yet (an older file: opening
    it for writing once, as ``python -m workers.storage serve`` does, migrates it). Use one store per
    thread: sqlite3 connections are not shared across threads, unless ``any_thread=True`` and the
    caller makes sure two threads never use it at once.
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
            if not _has_table(self._conn, "plans") or _has_table(self._conn, "subscriptions"):
                self._conn.close()
                raise ValueError(
                    f"storage database {self.path} is not migrated to plans yet: open it for writing "
                    "once, as `python -m workers.storage serve` does, to migrate it"
                )
        else:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not any_thread)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            if _has_table(self._conn, "subscriptions"):
                with self.transaction():
                    _migrate_subscriptions(self._conn)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def is_empty(self) -> bool:
        return self._conn.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is None

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

    def replace_all(self, samples: Iterable[SizeSample], subscriptions: Iterable[Subscription]) -> int:
        """Replace every sample and plan, in one transaction: the bulk path (seeding).

        Stores exactly the rows that ``clear()``, ``record_samples(samples)`` and one
        ``set_subscription`` per plan would, with the same rules, but checks the samples against
        each other in memory (``workers.storage.bulk``) instead of against the database one by one.
        Two plans of an account effective at the same instant are refused. Returns how many samples
        were stored.
        """
        rows = bulk.checked_rows(samples, _time_text)
        plans = [_plan_row(plan) for history in plan_histories(subscriptions).values() for plan in history]
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
                "INSERT INTO plans (account_id, effective_from, included_bytes) VALUES (?, ?, ?)", plans
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

    def set_subscription(
        self, account_id: str, included: int | str, *, effective_from: datetime = ALWAYS
    ) -> None:
        """Give the account a plan of ``included`` bytes from ``effective_from`` on.

        ``included`` is whole bytes (int) or text with its unit: ``"100 GB"`` (10^9 bytes each) or
        ``"100 GiB"`` (2^30 bytes each); a bare number or a float is refused. A plan at the same
        ``effective_from`` is replaced; to end a plan, give the account 0 bytes from then on.
        """
        plan = _plan(account_id, included, effective_from)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO plans (account_id, effective_from, included_bytes) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id, effective_from) "
                "DO UPDATE SET included_bytes = excluded.included_bytes",
                _plan_row(plan),
            )

    def remove_subscription(self, account_id: str, *, effective_from: datetime = ALWAYS) -> bool:
        """Delete the account's plan that takes effect at ``effective_from`` (a mistaken entry; the
        plans before and after it stay); returns False if there was none."""
        with self.transaction():
            cursor = self._conn.execute(
                "DELETE FROM plans WHERE account_id = ? AND effective_from = ?",
                (account_id, _time_text(effective_from)),
            )
        return cursor.rowcount > 0

    def clear(self) -> None:
        """Delete every sample and plan (the schema stays)."""
        with self.transaction():
            self._conn.execute("DELETE FROM samples")
            self._conn.execute("DELETE FROM plans")

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
        """Every plan of every account, the whole history, ordered by (account_id, effective_from)."""
        rows = self._conn.execute(
            "SELECT account_id, included_bytes, effective_from FROM plans ORDER BY account_id, effective_from"
        ).fetchall()
        return [
            Subscription(account_id, included, datetime.fromisoformat(effective_from))
            for account_id, included, effective_from in rows
        ]

    def account_samples(
        self, *, before: datetime, plans_at: datetime
    ) -> Generator[AccountSamples, None, None]:
        """Every account's samples taken before ``before``, with its plan in effect at ``plans_at``
        (a period's start), account by account.

        Accounts come in increasing ``account_id`` order, each resource's samples in time order, one
        account in memory at a time, all of it from one snapshot (see ``workers.storage.scan``).
        """
        for name, moment in (("before", before), ("plans_at", plans_at)):
            if moment.utcoffset() is None:
                raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
        return scan.account_samples(self._conn, _time_text(before), _time_text(plans_at))
