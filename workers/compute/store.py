"""The compute service's own SQLite store of instance lifecycle events (stdlib sqlite3, no ORM).

Each operation opens its own short-lived connection inside a transaction, so one store object can
be used from any thread (the service reads it from a worker thread). Times are stored as fixed-width
UTC ISO-8601 text with microseconds (``2026-10-01T00:00:00.000000+00:00``), so text order is time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from workers.compute.usage import EventKind, InstanceEvent

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_events (
    instance_id TEXT NOT NULL CHECK (length(instance_id) > 0),
    account_id  TEXT NOT NULL CHECK (length(account_id) > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('create', 'resize', 'delete')),
    at          TEXT NOT NULL CHECK (length(at) = 32),
    vcpus       INTEGER CHECK (vcpus >= 0),
    memory_mib  INTEGER CHECK (memory_mib >= 0),
    CHECK ((kind = 'delete') = (vcpus IS NULL AND memory_mib IS NULL)),
    CHECK (kind = 'delete' OR (vcpus IS NOT NULL AND memory_mib IS NOT NULL)),
    PRIMARY KEY (instance_id, at)
) WITHOUT ROWID;
"""

_INSERT = """
INSERT INTO instance_events (instance_id, account_id, kind, at, vcpus, memory_mib)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (instance_id, at) DO NOTHING
"""

_KINDS: dict[str, EventKind] = {"create": "create", "resize": "resize", "delete": "delete"}
_Row = tuple[str, str, str, str, int | None, int | None]


def format_at(moment: datetime) -> str:
    """``moment`` as the fixed-width UTC text stored in the ``at`` column."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"at {moment.isoformat()} is a naive datetime; give it a timezone")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class ComputeStore:
    """Instance lifecycle events in a SQLite file; the schema is created if missing.

    An instance has at most one event per instant. Recording an event identical to a stored one is a
    no-op (so replays are harmless); a different event at the same instant raises ``ValueError``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._closed = False
        with self._transaction() as conn:
            # WAL: a usage stream's long read (paced by the broker) must not block writers.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError(f"compute store {self.path} is closed")
        with closing(sqlite3.connect(self.path)) as conn, conn:
            yield conn

    def record(self, event: InstanceEvent) -> None:
        """Store one event (see ``record_many``)."""
        self.record_many([event])

    def record_many(self, events: Iterable[InstanceEvent]) -> int:
        """Store events in one transaction: all or none. Returns how many were new.

        Raises ``ValueError`` naming the field for an invalid event, or naming the instance when it
        already has a different event at the same instant.
        """
        rows = [_to_row(_checked(event)) for event in events]
        added = 0
        with self._transaction() as conn:
            for row in rows:
                added += self._insert(conn, row)
        return added

    def replace_all(self, events: Iterable[InstanceEvent]) -> int:
        """Delete every stored event and store ``events`` instead, in one transaction."""
        rows = [_to_row(_checked(event)) for event in events]
        added = 0
        with self._transaction() as conn:
            conn.execute("DELETE FROM instance_events")
            for row in rows:
                added += self._insert(conn, row)
        return added

    def clear(self) -> None:
        """Delete every stored event."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM instance_events")

    def is_empty(self) -> bool:
        with self._transaction() as conn:
            return conn.execute("SELECT 1 FROM instance_events LIMIT 1").fetchone() is None

    def iter_events(self, batch_size: int = 500) -> Generator[InstanceEvent, None, None]:
        """Every stored event, ordered by instance, then time, read lazily (``batch_size`` rows at a
        time) by one SELECT, so from one snapshot, held until the generator is exhausted or closed.

        The generator may be advanced from different threads, one at a time (its connection is opened
        with ``check_same_thread=False``), e.g. a batch at a time by ``workers.sdk.iterate_in_thread``.
        Rows were checked when they were stored, so they are not checked again field by field.
        """
        if self._closed:
            raise RuntimeError(f"compute store {self.path} is closed")
        with closing(sqlite3.connect(self.path, check_same_thread=False)) as conn:
            cursor = conn.execute(
                "SELECT instance_id, account_id, kind, at, vcpus, memory_mib "
                "FROM instance_events ORDER BY instance_id, at"
            )
            try:
                while rows := cursor.fetchmany(batch_size):
                    for row in rows:
                        yield _from_own_row(row)
            finally:
                cursor.close()

    def events(self) -> list[InstanceEvent]:
        """Every stored event, ordered by instance, then time."""
        with self._transaction() as conn:
            rows: list[_Row] = conn.execute(
                "SELECT instance_id, account_id, kind, at, vcpus, memory_mib "
                "FROM instance_events ORDER BY instance_id, at"
            ).fetchall()
        return [_from_row(row) for row in rows]

    def close(self) -> None:
        """Make the store unusable. Connections are per operation, so nothing is held open."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: _Row) -> int:
        if conn.execute(_INSERT, row).rowcount == 1:
            return 1
        existing: _Row = conn.execute(
            "SELECT instance_id, account_id, kind, at, vcpus, memory_mib "
            "FROM instance_events WHERE instance_id = ? AND at = ?",
            (row[0], row[3]),
        ).fetchone()
        if existing != row:
            raise ValueError(
                f"instance {row[0]!r} already has a different event at {row[3]}: "
                f"stored {existing[2]} {existing[4]}/{existing[5]}, new {row[2]} {row[4]}/{row[5]}"
            )
        return 0


def _checked(event: Any) -> InstanceEvent:
    if not isinstance(event, InstanceEvent):
        raise ValueError(f"expected an InstanceEvent, got {type(event).__name__}")
    # InstanceEvent validates itself on construction; re-validate in case it was built around that.
    return InstanceEvent(
        instance_id=event.instance_id,
        account_id=event.account_id,
        kind=event.kind,
        at=event.at,
        vcpus=event.vcpus,
        memory_mib=event.memory_mib,
    )


def _to_row(event: InstanceEvent) -> _Row:
    return (
        event.instance_id,
        event.account_id,
        event.kind,
        format_at(event.at),
        event.vcpus,
        event.memory_mib,
    )


def _from_row(row: _Row) -> InstanceEvent:
    instance_id, account_id, kind, at, vcpus, memory_mib = row
    if kind not in _KINDS:
        raise ValueError(f"instance {instance_id!r}: stored kind {kind!r} is unknown")
    return InstanceEvent(
        instance_id=instance_id,
        account_id=account_id,
        kind=_KINDS[kind],
        at=datetime.fromisoformat(at),
        vcpus=vcpus,
        memory_mib=memory_mib,
    )


def _from_own_row(row: _Row) -> InstanceEvent:
    """An event from a row this store wrote (so checked then): only kind and time are looked at."""
    instance_id, account_id, kind, at, vcpus, memory_mib = row
    moment = datetime.fromisoformat(at)
    if kind not in _KINDS or moment.tzinfo is not UTC:
        return _from_row(row)  # not as this store writes it: the full checks say what is wrong
    return InstanceEvent.trusted(instance_id, account_id, _KINDS[kind], moment, vcpus, memory_mib)
