"""The network service's own SQLite store of interface counter readings and plans (stdlib sqlite3).

Three tables: ``interfaces`` (each interface and the one account it belongs to), ``readings`` (its
transmitted-bytes counter at a time) and ``plans`` (each account's history of allowances, a row per
``effective_from``). Times are stored as fixed-width UTC ISO-8601 text with microseconds
(``2026-10-01T00:00:00.000000+00:00``), so text order is time order; counters and allowances are
whole bytes (INTEGER).

Each operation opens its own short-lived connection inside a transaction, so one store object can
be used from any thread; ``account_interfaces`` holds one connection (and one snapshot) for as long
as its generator runs and may be advanced from any thread, one at a time (``iterate_in_thread``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from workers.network.plans import ALWAYS, Plan, allowance_bytes, plan_histories
from workers.network.usage import AccountInterfaces, CounterReading, InterfaceReadings

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS interfaces (
    interface_id TEXT PRIMARY KEY CHECK (length(interface_id) BETWEEN 1 AND 256),
    account_id   TEXT NOT NULL CHECK (length(account_id) BETWEEN 1 AND 128)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS interfaces_by_account ON interfaces (account_id, interface_id);
CREATE TABLE IF NOT EXISTS readings (
    interface_id TEXT NOT NULL REFERENCES interfaces (interface_id),
    at           TEXT NOT NULL CHECK (length(at) = 32),
    tx_bytes     INTEGER NOT NULL CHECK (tx_bytes >= 0),
    PRIMARY KEY (interface_id, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plans (
    account_id     TEXT NOT NULL,
    effective_from TEXT NOT NULL,
    included_bytes INTEGER NOT NULL CHECK (included_bytes >= 0),
    PRIMARY KEY (account_id, effective_from)
) WITHOUT ROWID;
"""

# Each interface of each account, in (account, interface) order, with its readings before the
# period's end from the last one before the period's start on (the baseline its first reading in
# the period is measured from): one ordered scan of interfaces_by_account, then readings' primary key.
_READINGS: Final = """
SELECT i.account_id, i.interface_id, r.at, r.tx_bytes
FROM interfaces AS i
JOIN readings AS r ON r.interface_id = i.interface_id
WHERE r.at < :end
  AND r.at >= coalesce(
      (SELECT max(b.at) FROM readings AS b WHERE b.interface_id = i.interface_id AND b.at < :start),
      :start)
ORDER BY i.account_id, i.interface_id, r.at
"""
# Each account's plan in effect at a moment: its latest effective_from at or before it. SQLite
# takes a bare column (included_bytes) from the row that holds the group's max(), by design.
_PLANS_AT: Final = """
SELECT account_id, included_bytes, max(effective_from)
FROM plans
WHERE effective_from <= ?
GROUP BY account_id
ORDER BY account_id
"""

Row = tuple[str, str, int]
"""(interface_id, at as stored text, tx_bytes)."""


def format_at(moment: datetime) -> str:
    """``moment`` as the fixed-width UTC text stored in ``at`` and ``effective_from``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} is a naive datetime; give it a timezone")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class NetworkStore:
    """Interface readings and plans in one SQLite file; the schema is created if missing.

    An interface belongs to one account for ever and has at most one reading per instant: recording
    a reading identical to a stored one is a no-op (so an agent may send again), a different counter
    at the same instant or the interface under another account raises ``ValueError``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with self._transaction() as conn:
            # WAL: a usage stream's long read (paced by the broker) must not block the agents' writes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            yield conn

    def is_empty(self) -> bool:
        """No reading at all: a new volume or a wrong path (``workers.sdk.empty``)."""
        with self._transaction() as conn:
            return conn.execute("SELECT 1 FROM readings LIMIT 1").fetchone() is None

    def record_readings(self, readings: Iterable[CounterReading]) -> int:
        """Store readings in one transaction: all or none. Returns how many were new."""
        checked = [_checked(reading) for reading in readings]
        added = 0
        with self._transaction() as conn:
            for reading in checked:
                added += _insert(conn, reading)
        return added

    def set_plan(self, account_id: str, included: int | str, *, effective_from: datetime = ALWAYS) -> None:
        """Give the account a plan of ``included`` bytes of free egress per period from
        ``effective_from`` on: whole bytes (int) or text with its unit (``"100 GB"``, ``"100 GiB"``).
        A plan at the same ``effective_from`` is replaced; to end a plan, give 0 bytes from then on."""
        try:
            plan = Plan(account_id, allowance_bytes(included), effective_from)
        except ValueError as error:
            raise ValueError(f"plan of account {account_id!r}: {error}") from None
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO plans (account_id, effective_from, included_bytes) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id, effective_from) "
                "DO UPDATE SET included_bytes = excluded.included_bytes",
                _plan_row(plan),
            )

    def replace_all(self, readings: Iterable[CounterReading], plans: Iterable[Plan]) -> int:
        """Delete every interface, reading and plan, and store these instead, in one transaction
        (seeding). Readings are checked against each other in memory with ``record_readings``'s
        rules. Returns how many readings were stored."""
        interfaces: dict[str, str] = {}
        rows: dict[tuple[str, str], int] = {}
        for reading in readings:
            where = f"interface {reading.interface_id!r}"
            owner = interfaces.setdefault(reading.interface_id, reading.account_id)
            if owner != reading.account_id:
                raise ValueError(f"{where}: account_id {reading.account_id!r} differs from {owner!r}")
            key = (reading.interface_id, format_at(reading.at))
            if rows.setdefault(key, reading.tx_bytes) != reading.tx_bytes:
                raise ValueError(f"{where}: a different reading is already given at {key[1]}")
        plan_rows = [_plan_row(plan) for history in plan_histories(plans).values() for plan in history]
        with self._transaction() as conn:
            conn.execute("DELETE FROM readings")
            conn.execute("DELETE FROM interfaces")
            conn.execute("DELETE FROM plans")
            conn.executemany(
                "INSERT INTO interfaces (interface_id, account_id) VALUES (?, ?)", interfaces.items()
            )
            conn.executemany(
                "INSERT INTO readings (interface_id, at, tx_bytes) VALUES (?, ?, ?)",
                ((interface_id, at, value) for (interface_id, at), value in rows.items()),
            )
            conn.executemany(
                "INSERT INTO plans (account_id, effective_from, included_bytes) VALUES (?, ?, ?)", plan_rows
            )
        return len(rows)

    def readings(self) -> list[CounterReading]:
        """Every stored reading, ordered by (interface_id, at)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT r.interface_id, i.account_id, r.at, r.tx_bytes FROM readings AS r "
                "JOIN interfaces AS i USING (interface_id) ORDER BY r.interface_id, r.at"
            ).fetchall()
        return [
            CounterReading(interface_id, account_id, datetime.fromisoformat(at), tx_bytes)
            for interface_id, account_id, at, tx_bytes in rows
        ]

    def plans(self) -> list[Plan]:
        """Every plan of every account, the whole history, ordered by (account_id, effective_from)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT account_id, included_bytes, effective_from FROM plans "
                "ORDER BY account_id, effective_from"
            ).fetchall()
        return [Plan(account_id, included, datetime.fromisoformat(at)) for account_id, included, at in rows]

    def account_interfaces(self, start: datetime, end: datetime) -> Generator[AccountInterfaces, None, None]:
        """Every account with an interface read before ``end``, in ``account_id`` order, with its
        interfaces' readings from the last one before ``start`` up to ``end`` (exclusive) and its
        plan in effect at ``start``: what ``stream_network_usage`` needs for the period.

        Reads from one snapshot (one read transaction), held until the generator is exhausted or
        closed, one account in memory at a time.
        """
        bounds = {"start": format_at(start), "end": format_at(end)}
        with closing(sqlite3.connect(self.path, check_same_thread=False)) as conn:
            readings_cursor, plans_cursor = conn.cursor(), conn.cursor()
            readings_cursor.execute("BEGIN")  # one snapshot for both scans
            try:
                plans = _PlansInOrder(plans_cursor.execute(_PLANS_AT, (bounds["start"],)))
                account_id: str | None = None
                interfaces: list[InterfaceReadings] = []
                times: list[datetime] = []
                counters: list[int] = []
                for row_account, interface_id, at, tx_bytes in readings_cursor.execute(_READINGS, bounds):
                    if row_account != account_id:
                        if account_id is not None:
                            yield AccountInterfaces(account_id, plans.of(account_id), interfaces)
                        account_id, interfaces = row_account, []
                    if not interfaces or interfaces[-1].interface_id != interface_id:
                        times, counters = [], []
                        interfaces.append(InterfaceReadings(interface_id, times, counters))
                    times.append(datetime.fromisoformat(at))
                    counters.append(tx_bytes)
                if account_id is not None:
                    yield AccountInterfaces(account_id, plans.of(account_id), interfaces)
            finally:
                readings_cursor.close()
                plans_cursor.close()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # it only read


class _PlansInOrder:
    """Plans read in ``account_id`` order, asked for in increasing ``account_id`` order."""

    def __init__(self, rows: sqlite3.Cursor) -> None:
        self._rows = rows
        self._next: tuple[str, int, str] | None = rows.fetchone()

    def of(self, account_id: str) -> Plan | None:
        while self._next is not None and self._next[0] < account_id:
            self._next = self._rows.fetchone()
        if self._next is None or self._next[0] != account_id:
            return None
        _, included, effective_from = self._next
        return Plan(account_id, included, datetime.fromisoformat(effective_from))


def _plan_row(plan: Plan) -> tuple[str, str, int]:
    return plan.account_id, format_at(plan.effective_from), plan.included_bytes


def _checked(reading: object) -> CounterReading:
    if not isinstance(reading, CounterReading):
        raise ValueError(f"expected a CounterReading, got {type(reading).__name__}")
    # CounterReading validates itself on construction; again, in case it was built around that.
    return CounterReading(reading.interface_id, reading.account_id, reading.at, reading.tx_bytes)


def _insert(conn: sqlite3.Connection, reading: CounterReading) -> int:
    where = f"interface {reading.interface_id!r}"
    conn.execute(
        "INSERT INTO interfaces (interface_id, account_id) VALUES (?, ?) "
        "ON CONFLICT (interface_id) DO NOTHING",
        (reading.interface_id, reading.account_id),
    )
    (owner,) = conn.execute(
        "SELECT account_id FROM interfaces WHERE interface_id = ?", (reading.interface_id,)
    ).fetchone()
    if owner != reading.account_id:
        raise ValueError(f"{where}: account_id {reading.account_id!r} differs from the stored {owner!r}")
    at = format_at(reading.at)
    inserted = conn.execute(
        "INSERT INTO readings (interface_id, at, tx_bytes) VALUES (?, ?, ?) "
        "ON CONFLICT (interface_id, at) DO NOTHING",
        (reading.interface_id, at, reading.tx_bytes),
    ).rowcount
    if inserted:
        return 1
    (stored,) = conn.execute(
        "SELECT tx_bytes FROM readings WHERE interface_id = ? AND at = ?", (reading.interface_id, at)
    ).fetchone()
    if stored != reading.tx_bytes:
        raise ValueError(
            f"{where}: a different reading is already stored at {at}: {stored}, new {reading.tx_bytes}"
        )
    return 0
