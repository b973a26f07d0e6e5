"""Read the storage store account by account, for the usage stream: one ordered scan, no sorting.

Rows are the store's own, checked when they were written, so they are not re-validated one by one
(no ``SizeSample`` per row); only a few cheap checks per resource remain. One row per resource
carries all its samples, so Python handles 300,000 rows rather than 3.6 million at 100,000 accounts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from datetime import datetime
from typing import Final

from workers.storage.plans import Subscription
from workers.storage.usage import KINDS, AccountSamples, Kind, ResourceSamples

# One row per (account, resource, kind): its samples' times and sizes (-1: deleted) in index order,
# i.e. in time order. The covering index samples_for_usage makes this one ordered scan (without it
# SQLite sorts: correct, but slow). A resource has exactly one row unless it has samples under two
# accounts or of two kinds, which the count check at the end catches.
_RESOURCES: Final = """
SELECT account_id, resource_id, kind, group_concat(at), group_concat(coalesce(size_bytes, -1))
FROM samples
WHERE at < ?
GROUP BY account_id, resource_id, kind
ORDER BY account_id, resource_id, kind
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
_RESOURCE_COUNT: Final = (
    "SELECT count(*) FROM (SELECT resource_id FROM samples WHERE at < ? GROUP BY resource_id)"
)
_INCONSISTENT_RESOURCE: Final = (
    "SELECT resource_id FROM samples WHERE at < ? GROUP BY resource_id "
    "HAVING min(account_id) <> max(account_id) OR min(kind) <> max(kind) LIMIT 1"
)
_DELETED: Final = -1
_KIND_OF: Final[dict[str, Kind]] = {kind: kind for kind in KINDS}


def account_samples(
    conn: sqlite3.Connection, end: str, plans_at: str
) -> Generator[AccountSamples, None, None]:
    """Every account with samples before ``end`` (stored time text), in ``account_id`` order, with
    its plan in effect at ``plans_at`` (stored time text).

    Reads in one read transaction (one snapshot), held until the generator is exhausted or closed;
    plans are merged in from a second ordered scan. A resource under two accounts or of two
    kinds raises ``ValueError`` when the scan ends, before the last account is given.
    """
    resources_cursor, plans_cursor = conn.cursor(), conn.cursor()
    resources_cursor.execute("BEGIN")  # one snapshot for both scans and the check after them
    try:
        plans = _Plans(plans_cursor.execute(_PLANS_AT, (plans_at,)))
        groups = 0
        account_id: str | None = None
        resources: list[ResourceSamples] = []
        for row_account, resource_id, kind, times_text, sizes_text in resources_cursor.execute(
            _RESOURCES, (end,)
        ):
            groups += 1
            if row_account != account_id:
                if account_id is not None:
                    yield AccountSamples(account_id, plans.of(account_id), resources)
                account_id, resources = row_account, []
            resources.append(_resource(resource_id, kind, times_text, sizes_text))
        _check_one_row_per_resource(conn, groups, end)
        if account_id is not None:
            yield AccountSamples(account_id, plans.of(account_id), resources)
    finally:
        resources_cursor.close()
        plans_cursor.close()
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # it only read


class _Plans:
    """Plans read in ``account_id`` order, asked for in increasing ``account_id`` order."""

    def __init__(self, rows: sqlite3.Cursor) -> None:
        self._rows = rows
        self._next: tuple[str, int, str] | None = rows.fetchone()

    def of(self, account_id: str) -> Subscription | None:
        while self._next is not None and self._next[0] < account_id:
            self._next = self._rows.fetchone()
        if self._next is None or self._next[0] != account_id:
            return None
        _, included, effective_from = self._next
        return Subscription(account_id, included, datetime.fromisoformat(effective_from))


def _check_one_row_per_resource(conn: sqlite3.Connection, groups: int, end: str) -> None:
    (resources,) = conn.execute(_RESOURCE_COUNT, (end,)).fetchone()
    if resources != groups:
        (resource_id,) = conn.execute(_INCONSISTENT_RESOURCE, (end,)).fetchone() or ("?",)
        raise ValueError(f"resource {resource_id!r}: samples under two accounts or of two kinds")


def _resource(resource_id: str, kind: str, times_text: str, sizes_text: str) -> ResourceSamples:
    checked_kind = _KIND_OF.get(kind)
    if checked_kind is None:
        raise ValueError(f"resource {resource_id!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    sizes: list[int | None] = list(map(int, sizes_text.split(",")))
    if sizes[-1] == _DELETED:
        sizes[-1] = None
    if _DELETED in sizes:
        raise ValueError(f"resource {resource_id!r}: a sample comes after its deletion")
    return ResourceSamples(
        resource_id, checked_kind, list(map(datetime.fromisoformat, times_text.split(","))), sizes
    )
