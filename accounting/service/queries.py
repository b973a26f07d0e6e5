"""What operators inspect: reports, their history and per-service outcomes, invoices, the outbox.

Plain JSON-ready dictionaries, rendered as Rich tables by the CLI or printed with ``--json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from accounting.core.rate_card import RateCard
from accounting.store.repository import OutboxStatus, ReportRecord, ReportStore


def report_summary(record: ReportRecord) -> dict[str, Any]:
    return {
        "period": record.period.period_id,
        "revision": record.revision,
        "report_id": str(record.report_id),
        "status": record.status.value,
        "total": None if record.total is None else str(record.total),
        "currency": record.currency,
        "services": list(record.services),
        "requested": list(record.requested),
        "supersedes": None if record.supersedes is None else str(record.supersedes),
        "rate_card_fingerprint": None if record.rate_card is None else card_fingerprint(record.rate_card),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


async def report_detail(store: ReportStore, record: ReportRecord) -> dict[str, Any]:
    """Status history, per-service outcome and reason, record counts and totals of one report."""
    replies = await store.replies(record.report_id)
    invoices = await store.invoices(report_id=record.report_id, drafts=True)
    return {
        **report_summary(record),
        "history": [
            {"status": t.status.value, "at": t.at.isoformat(), "reason": t.reason}
            for t in await store.history(record.report_id)
        ],
        "services": [
            {
                "service": service,
                "state": reply.state if reply else "not asked",
                "records": reply.records if reply else 0,
                "reason_code": reply.reason_code if reply else None,
                "reason": reply.reason if reply else None,
                "carried_from": str(reply.carried_from) if reply and reply.carried_from else None,
            }
            for service in record.services
            for reply in [replies.get(service)]
        ],
        "records": sum(reply.records for reply in replies.values()),
        "approvals": [
            {
                "decision": approval.decision,
                "by": approval.decided_by,
                "at": approval.decided_at.isoformat(),
                "reason": approval.reason,
            }
            for approval in await store.approvals(record.report_id)
        ],
        "invoices": len(invoices),
        "rate_card": record.rate_card,
    }


def card_fingerprint(stored: dict[str, Any] | None) -> str:
    """The fingerprint invoices carry (``sha256:`` and hex) of a revision's stored card: one
    format for invoices, ``reports show`` and ``reports reconcile``."""
    if stored is None:
        return "(none stored)"
    try:
        return RateCard.model_validate(stored).fingerprint
    except ValidationError:
        return "(unreadable)"


async def find_report(store: ReportStore, period_id: str, revision: int | None) -> ReportRecord | None:
    if revision is None:
        return await store.latest(period_id)
    matches = [record for record in await store.list_reports(period_id) if record.revision == revision]
    return matches[0] if matches else None


def outbox_summary(status: OutboxStatus, now: datetime) -> dict[str, Any]:
    """What ``reckon outbox`` shows: the relay's backlog, its age, and the last failure."""
    oldest = status.oldest_pending_at
    return {
        "pending": status.pending,
        "sent": status.sent,
        "staged": status.staged,
        "oldest_pending_at": None if oldest is None else oldest.isoformat(),
        "oldest_pending_seconds": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        "last_error": status.last_error,
        "last_error_message_id": status.last_error_message_id,
    }
