"""One service's answer as the gather machine tracks it (``ServiceOutcome``): its state, the chunks
accepted so far, the records counted, the last chunk's announced total, and its answer id (a
service that answers again starts a new answer and the old one is forgotten).

Counters only, never records: the records go to the store as they are accepted. The machine that
updates these is in ``gather``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from contracts import AbortReason


class ServiceState(StrEnum):
    WAITING = "waiting"
    OK = "ok"
    FAILED = "failed"


@dataclass
class ServiceOutcome:
    """What is known about one configured service's answer in this gather: counters only."""

    service: str
    request_id: str
    state: ServiceState = ServiceState.WAITING
    reason: AbortReason | None = None
    received: set[int] = field(default_factory=set)
    """Sequence numbers of the chunks accepted so far."""
    records: int = 0
    """Records in the chunks accepted so far."""
    highest_seq: int = -1
    last_seq: int | None = None
    announced: int | None = None
    """``total_records`` of the last chunk, once it arrived."""
    answer_id: str | None = None
    replaced: set[str | None] = field(default_factory=set)
    """Answer ids this service gave up for a newer answer: their late chunks are ignored."""

    def restart(self, answer_id: str | None) -> None:
        """The service answers again from scratch: forget the chunks of the answer before."""
        self.replaced.add(self.answer_id)
        self.answer_id = answer_id
        self.received = set()
        self.records, self.highest_seq = 0, -1
        self.last_seq = self.announced = None

    @property
    def chunks(self) -> int:
        return len(self.received)


def missing_chunks(outcome: ServiceOutcome) -> str:
    if not outcome.received:
        return ""
    if outcome.last_seq is None:
        return f" ({outcome.chunks} chunk(s) received, the last one not)"
    missing = sorted(set(range(outcome.last_seq + 1)) - outcome.received)
    return f" ({outcome.chunks} chunk(s) received, missing seq {', '.join(map(str, missing))})"
