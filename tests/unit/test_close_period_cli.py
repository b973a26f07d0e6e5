"""``reckon close-period``: a named PERIOD or ``--last-month`` (the CronJob), exactly one of them,
and never a period the billing calendar would refuse (nothing is published then)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from accounting.cli.reckon import app
from accounting.core.calendar import UTC_MONTHS


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 1, 0, 30, tzinfo=UTC), "2026-10"),  # when the CronJob runs
        (datetime(2027, 1, 1, 0, 30, tzinfo=UTC), "2026-12"),  # across a year
        (datetime(2026, 3, 31, 23, 59, tzinfo=UTC), "2026-02"),
        # 00:30 on 1 November in UTC+2 is still 31 October in UTC: the month before is September.
        (datetime(2026, 11, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), "2026-09"),
    ],
)
def test_last_month_is_the_calendar_month_before_now_in_utc(now: datetime, expected: str) -> None:
    assert UTC_MONTHS.previous(now).period_id == expected


@pytest.mark.parametrize("arguments", [[], ["2026-10", "--last-month"]])
def test_exactly_one_of_period_and_last_month(arguments: list[str]) -> None:
    result = CliRunner().invoke(app, ["close-period", *arguments])

    assert result.exit_code == 2
    assert "PERIOD (YYYY-MM) or --last-month" in result.output


def test_a_malformed_period_is_refused_before_anything_is_published() -> None:
    result = CliRunner().invoke(app, ["close-period", "2026-13"])

    assert result.exit_code == 2
    assert "PERIOD" in result.output


@pytest.mark.parametrize(
    ("period", "why"),
    [
        ("2099-01", "period 2099-01 has not ended and its settling delay of 10 min"),
        ("2026-02-30", "'2026-02-30' is not a month"),
    ],
)
def test_a_period_the_calendar_refuses_is_refused_before_anything_is_published(
    period: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://nobody:secret@127.0.0.1:1/")  # never reached
    result = CliRunner().invoke(app, ["close-period", period])

    assert result.exit_code == 2
    assert why in " ".join(result.output.split())
    assert "published" not in result.output
