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
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    ABORTED = "aborted"


# A report being built (PENDING to PRICING) may go back to GATHERING: a coordinator that takes
# over an abandoned report (its builder stopped or died) gathers again from the start.
TRANSITIONS: dict[ReportStatus, frozenset[ReportStatus]] = {
    ReportStatus.PENDING: frozenset({ReportStatus.GATHERING, ReportStatus.ABORTED}),
    ReportStatus.GATHERING: frozenset(
        {ReportStatus.GATHERING, ReportStatus.NORMALIZING, ReportStatus.ABORTED}
    ),
    ReportStatus.NORMALIZING: frozenset({ReportStatus.GATHERING, ReportStatus.PRICING, ReportStatus.ABORTED}),
    ReportStatus.PRICING: frozenset({ReportStatus.GATHERING, ReportStatus.PUBLISHING, ReportStatus.ABORTED}),
    ReportStatus.PUBLISHING: frozenset({ReportStatus.COMPLETED}),
    ReportStatus.COMPLETED: frozenset(),
    ReportStatus.ABORTED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


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
        if status not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"report {self.report_id}: {self.status} → {status} is not allowed")
        transition = Transition(status, at, reason)
        self.transitions.append(transition)
        return transition
