"""Report lifecycle: the statuses a report moves through and the transitions allowed between them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ReportStatus(StrEnum):
    PENDING = "pending"
    GATHERING = "gathering"
    NORMALIZING = "normalizing"
    PRICING = "pricing"
    DRAFT = "draft"
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    ABORTED = "aborted"


# A priced report is issued at once (PRICING → PUBLISHING, automatic approval) or waits as a
# DRAFT for a reviewer, who approves it (→ PUBLISHING) or rejects it (→ ABORTED).
# A report being built (PENDING to PRICING) may go back to GATHERING: a coordinator that takes
# over an abandoned report (its builder stopped or died) gathers again from the start.
TRANSITIONS: dict[ReportStatus, frozenset[ReportStatus]] = {
    ReportStatus.PENDING: frozenset({ReportStatus.GATHERING, ReportStatus.ABORTED}),
    ReportStatus.GATHERING: frozenset(
        {ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.ABORTED}
    ),
    ReportStatus.NORMALIZING: frozenset({ReportStatus.GATHERING, ReportStatus.PRICING, ReportStatus.ABORTED}),
    ReportStatus.PRICING: frozenset(
        {ReportStatus.GATHERING, ReportStatus.DRAFT, ReportStatus.PUBLISHING, ReportStatus.ABORTED}
    ),
    ReportStatus.DRAFT: frozenset({ReportStatus.PUBLISHING, ReportStatus.ABORTED}),
    ReportStatus.PUBLISHING: frozenset({ReportStatus.COMPLETED}),
    ReportStatus.COMPLETED: frozenset(),
    ReportStatus.ABORTED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(report_id: object, current: ReportStatus, status: ReportStatus) -> None:
    """Raise ``IllegalTransition`` unless the table allows ``current → status``."""
    if status not in TRANSITIONS[current]:
        raise IllegalTransition(f"report {report_id}: {current} → {status} is not allowed")


@dataclass(frozen=True)
class Transition:
    status: ReportStatus
    at: datetime
    reason: str = ""


@dataclass
class ReportHistory:
    """Every transition of one report, in order; refuses a transition the table does not allow."""

    report_id: str
    transitions: list[Transition]

    @classmethod
    def start(cls, report_id: str, at: datetime) -> ReportHistory:
        return cls(report_id, [Transition(ReportStatus.PENDING, at)])

    @property
    def status(self) -> ReportStatus:
        return self.transitions[-1].status

    def move(self, status: ReportStatus, at: datetime, reason: str = "") -> Transition:
        check_transition(self.report_id, self.status, status)
        transition = Transition(status, at, reason)
        self.transitions.append(transition)
        return transition
