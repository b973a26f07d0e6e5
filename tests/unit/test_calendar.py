"""The billing calendar: periods are months in its time zone, closable once ended and settled;
a PeriodClosed whose id does not match its bounds, or that is not over, is refused with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounting.core.calendar import UTC_MONTHS, BillingCalendar, NotAPeriod, time_zone
from contracts import Period

PARIS = BillingCalendar(time_zone("Europe/Paris"), timedelta(minutes=15))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_month_in_utc_and_in_paris() -> None:
    assert UTC_MONTHS.period("2026-10") == Period.month("2026-10")
    october = PARIS.period("2026-10")  # summer time starts it, winter time ends it
    assert (october.start, october.end) == (at(2026, 9, 30, 22), at(2026, 10, 31, 23))
    december = PARIS.period("2026-12")
    assert (december.start, december.end) == (at(2026, 11, 30, 23), at(2026, 12, 31, 23))


@pytest.mark.parametrize("period_id", ["2026-13", "2026-00", "26-10", "2026-10-05", "october", "2026-1"])
def test_an_id_that_is_not_a_month_names_no_period(period_id: str) -> None:
    with pytest.raises(NotAPeriod, match=period_id):
        UTC_MONTHS.period(period_id)


def test_a_period_is_closable_once_ended_and_settled() -> None:
    october = PARIS.period("2026-10")
    assert PARIS.refusal(october, at(2026, 10, 31, 22, 59)) == (
        "period 2026-10 has not ended and its settling delay of 15 min: it may be closed from "
        "2026-10-31T23:15:00+00:00, it is 2026-10-31T22:59:00+00:00"
    )
    assert PARIS.refusal(october, at(2026, 10, 31, 23, 14, 59)) is not None
    assert PARIS.refusal(october, at(2026, 10, 31, 23, 15)) is None
    assert UTC_MONTHS.refusal(Period.month("2027-01"), at(2026, 12, 7)) == (
        "period 2027-01 has not ended: it may be closed from 2027-02-01T00:00:00+00:00, "
        "it is 2026-12-07T00:00:00+00:00"
    )


def test_an_id_whose_bounds_are_not_the_calendars_is_refused() -> None:
    one_day = Period(period_id="2026-05", start=at(2026, 5, 1), end=at(2026, 5, 2))
    assert UTC_MONTHS.refusal(one_day, at(2026, 12, 7)) == (
        "period 2026-05: bounds 2026-05-01T00:00:00+00:00 → 2026-05-02T00:00:00+00:00 are not the "
        "calendar's (2026-05-01T00:00:00+00:00 → 2026-06-01T00:00:00+00:00, a month in UTC)"
    )
    # A UTC month is not a Paris month.
    assert PARIS.refusal(Period.month("2026-05"), at(2026, 12, 7)) is not None
    quarter = Period(period_id="2026-Q3", start=at(2026, 7, 1), end=at(2026, 10, 1))
    assert "'2026-Q3' is not a month" in str(UTC_MONTHS.refusal(quarter, at(2026, 12, 7)))


@pytest.mark.parametrize(
    ("calendar", "now", "expected"),
    [
        (UTC_MONTHS, at(2027, 1, 1, 0, 30), "2026-12"),
        (PARIS, at(2026, 10, 31, 23, 30), "2026-10"),  # already 1 November in Paris
        (PARIS, at(2026, 10, 31, 22, 30), "2026-09"),
    ],
)
def test_the_previous_period_is_the_month_before_nows_in_the_calendars_zone(
    calendar: BillingCalendar, now: datetime, expected: str
) -> None:
    assert calendar.previous(now).period_id == expected


def test_a_time_zone_that_does_not_exist_is_named() -> None:
    with pytest.raises(ValueError, match="'Mars/Olympus' is not an IANA time zone"):
        time_zone("Mars/Olympus")
