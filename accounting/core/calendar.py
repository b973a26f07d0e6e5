"""The billing calendar: which periods exist, and when one may be closed.

Periods are calendar months in the calendar's time zone (``2026-10`` in Europe/Paris runs from
2026-10-01T00:00+02:00 to 2026-11-01T00:00+01:00). A ``PeriodClosed`` is taken only for a period
whose bounds are exactly the calendar's for its id, and only once it has ended and the settling
delay has passed (so usage recorded late inside the sub-services is in). Anything else is refused
with a reason that names the period, its bounds and the calendar's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts import Period

MONTH_ID = re.compile(r"^(\d{4})-(\d{2})$")


class NotAPeriod(ValueError):
    """The id names no period of the calendar (malformed, or not a month)."""


def time_zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Paris``); ValueError naming it otherwise."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Paris)") from None


@dataclass(frozen=True)
class BillingCalendar:
    """Monthly periods in ``zone``, closable ``settle`` after they end."""

    zone: tzinfo = UTC
    settle: timedelta = timedelta(0)

    @property
    def zone_name(self) -> str:
        return "UTC" if self.zone is UTC else str(self.zone)

    def period(self, period_id: str) -> Period:
        """The month named ``YYYY-MM`` in this calendar's time zone."""
        matched = MONTH_ID.match(period_id)
        if matched is None or not 1 <= int(matched.group(2)) <= 12:
            raise NotAPeriod(f"period {period_id!r} is not a month of the billing calendar (YYYY-MM)")
        year, month = int(matched.group(1)), int(matched.group(2))
        start = datetime(year, month, 1, tzinfo=self.zone)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=self.zone)
        return Period(period_id=period_id, start=start.astimezone(UTC), end=end.astimezone(UTC))

    def closable_from(self, period: Period) -> datetime:
        """The first moment ``period`` may be closed: its end plus the settling delay."""
        return period.end + self.settle

    def refusal(self, period: Period, now: datetime) -> str | None:
        """Why a ``PeriodClosed`` for ``period`` must be refused at ``now``, or None."""
        try:
            expected = self.period(period.period_id)
        except NotAPeriod as error:
            return str(error)
        if (period.start, period.end) != (expected.start, expected.end):
            return (
                f"period {period.period_id}: bounds {_span(period)} are not the calendar's "
                f"({_span(expected)}, a month in {self.zone_name})"
            )
        closable = self.closable_from(expected)
        if now < closable:
            delay = f" and its settling delay of {_duration(self.settle)}" if self.settle else ""
            return (
                f"period {period.period_id} has not ended{delay}: it may be closed from "
                f"{closable.isoformat()}, it is {now.astimezone(UTC).isoformat(timespec='seconds')}"
            )
        return None

    def previous(self, now: datetime) -> Period:
        """The month before ``now``'s, in this calendar's time zone (the CronJob's ``--last-month``).
        It is not moved back further when its settling delay has not passed: that is refused."""
        local = now.astimezone(self.zone)
        year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
        return self.period(f"{year:04d}-{month:02d}")


UTC_MONTHS = BillingCalendar()
"""Calendar months in UTC, closable as soon as they end."""


def _span(period: Period) -> str:
    return f"{period.start.isoformat()} → {period.end.isoformat()}"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
