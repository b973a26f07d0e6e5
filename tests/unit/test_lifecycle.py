"""The report lifecycle: the allowed transitions, recorded with times and reasons; all others refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounting.core.lifecycle import IllegalTransition, ReportHistory, ReportStatus, Transition

START = datetime(2026, 11, 1, tzinfo=UTC)
HAPPY_PATH = [
    ReportStatus.GATHERING,
    ReportStatus.NORMALIZING,
    ReportStatus.PRICING,
    ReportStatus.PUBLISHING,
    ReportStatus.COMPLETED,
]


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


def history_at(status: ReportStatus) -> ReportHistory:
    """A report moved along the happy path up to ``status``."""
    history = ReportHistory.start("rep-1", START)
    for step, next_status in enumerate(HAPPY_PATH[: HAPPY_PATH.index(status) + 1], start=1):
        history.move(next_status, at(step))
    return history


def test_a_new_report_is_pending() -> None:
    history = ReportHistory.start("rep-1", START)

    assert history.status is ReportStatus.PENDING
    assert history.transitions == [Transition(ReportStatus.PENDING, START)]


def test_the_happy_path_is_allowed_and_recorded_with_times_and_reasons() -> None:
    history = ReportHistory.start("rep-1", START)
    for step, status in enumerate(HAPPY_PATH, start=1):
        transition = history.move(status, at(step), reason=f"step {step}")
        assert transition == Transition(status, at(step), f"step {step}")

    assert history.status is ReportStatus.COMPLETED
    assert [(t.status, t.at, t.reason) for t in history.transitions] == [
        (ReportStatus.PENDING, START, ""),
        *[(status, at(step), f"step {step}") for step, status in enumerate(HAPPY_PATH, start=1)],
    ]


@pytest.mark.parametrize(
    "status", [ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.PRICING], ids=str
)
def test_a_report_can_abort_while_gathering_normalizing_or_pricing(status: ReportStatus) -> None:
    history = history_at(status)

    history.move(ReportStatus.ABORTED, at(60), reason="storage: deadline")

    assert history.status is ReportStatus.ABORTED
    assert history.transitions[-1] == Transition(ReportStatus.ABORTED, at(60), "storage: deadline")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (ReportStatus.COMPLETED, ReportStatus.GATHERING),
        (ReportStatus.GATHERING, ReportStatus.COMPLETED),
        (ReportStatus.PUBLISHING, ReportStatus.ABORTED),
        (ReportStatus.GATHERING, ReportStatus.PRICING),
        (ReportStatus.PRICING, ReportStatus.PRICING),
    ],
    ids=lambda status: str(status),
)
def test_an_illegal_transition_is_refused_naming_the_report(
    current: ReportStatus, target: ReportStatus
) -> None:
    history = history_at(current)
    recorded = list(history.transitions)

    with pytest.raises(IllegalTransition, match=f"report rep-1: {current} → {target} is not allowed"):
        history.move(target, at(60))
    assert history.transitions == recorded


def test_an_aborted_report_cannot_move_again() -> None:
    history = history_at(ReportStatus.GATHERING)
    history.move(ReportStatus.ABORTED, at(60))

    with pytest.raises(IllegalTransition, match="report rep-1: aborted → normalizing"):
        history.move(ReportStatus.NORMALIZING, at(61))
