"""What the kit observed and what it concluded: plain frozen data, no behaviour beyond summaries.

The aio-pika shell (``conformance.amqp``) fills ``Observations`` — each request it sent, with every
reply that came back for it as received (body and AMQP properties, unparsed) — and the pure core
(``conformance.checks``) turns them into a ``Result``: one ``Check`` per rule of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts import Period


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Check:
    """One rule of the contract and how the service fared: ``reason`` says why, in a sentence."""

    id: str
    title: str
    status: Status
    reason: str
    optional: bool = False
    """Not checked because it was not asked for (``--impostor-url`` not given): does not fail a run."""

    @property
    def ok(self) -> bool:
        """Passed, or an optional check nobody asked for."""
        return self.status is Status.PASS or (self.status is Status.NOT_CHECKED and self.optional)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "optional": self.optional,
        }


@dataclass(frozen=True)
class Result:
    """Every check of one run against one service."""

    service: str
    period: Period
    namespace: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Every check passed (an optional check that was not asked for does not count)."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.status is Status.FAIL)

    @property
    def not_passed(self) -> tuple[Check, ...]:
        """What keeps the run from passing: failures and checks that could not be judged."""
        return tuple(check for check in self.checks if not check.ok)

    def check(self, check_id: str) -> Check:
        for check in self.checks:
            if check.id == check_id:
                return check
        raise KeyError(check_id)

    def explain(self) -> str:
        """The table as plain text: what an assertion message or a log shows."""
        width = max((len(check.id) for check in self.checks), default=0)
        where = f" in namespace {self.namespace!r}" if self.namespace else ""
        verdict = "conforms" if self.passed else f"does NOT conform ({len(self.not_passed)} check(s))"
        lines = [f"service {self.service!r}{where}, period {self.period.period_id}: {verdict}"]
        for check in self.checks:
            lines.append(f"  {check.status.value:<11} {check.id:<{width}}  {check.reason}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "namespace": self.namespace,
            "period": self.period.period_id,
            "passed": self.passed,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Reply:
    """One message that arrived on the kit's reply queue, as received: nothing parsed yet."""

    body: bytes
    correlation_id: str | None
    user_id: str | None
    """The broker-verified sender (RabbitMQ refuses a ``user_id`` that is not the publisher's own)."""
    content_type: str | None
    content_encoding: str | None
    at: datetime


@dataclass(frozen=True)
class Asked:
    """One request the kit sent and the replies whose ``correlation_id`` is its ``request_id``."""

    label: str
    """What the request was, for reasons: ``the first request``, ``the malformed JSON request``."""
    request_id: str
    sent_at: datetime
    deadline: datetime
    replies: tuple[Reply, ...] = ()
    dead_lettered: bool | None = None
    """Whether the request was seen in the dead letters; None: the kit could not observe them."""
    waited: float = 0.0
    """How long the kit watched for replies (seconds), for a request that must get none."""


@dataclass(frozen=True)
class Observations:
    """Everything one run saw, for the pure checks (``conformance.checks.judge``)."""

    service: str
    period: Period
    namespace: str
    expected_user: str
    """The broker user every reply must carry: the service's (``service_users``, ``--service-user``),
    else the coordinator's own (one user for everything)."""
    expected_user_why: str = ""
    """Where ``expected_user`` came from, for a failure's reason."""
    unreachable: str | None = None
    """Why no request could reach the service (no consumer, returned): nothing else is judged."""
    first: Asked | None = None
    again: Asked | None = None
    """The same period asked again (a new request): its replies until it was delivered again."""
    redelivered: Asked | None = None
    """``again``'s request published a second time, same ids: the replies after that."""
    invalid_json: Asked | None = None
    invalid_schema: Asked | None = None
    unsigned: Asked | None = None
    """A valid request published without ``user_id``."""
    impostor: Asked | None = None
    """A valid request published by another broker user (``--impostor-url``); None: not asked."""
    impostor_problem: str | None = None
    """Why the impostor's request could not be published, when it could not."""
    strays: tuple[Reply, ...] = ()
    """Replies whose ``correlation_id`` is none of the requests' (or missing)."""
    dead_letters: str = ""
    """How dead letters were observed (or why they could not be)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Phases the shell did not run, by check id, and why."""
