"""The accounting store: one object over reports, replies, invoices and the outbox.

Every method is one transaction. Writes that must happen together (a report's move to
PUBLISHING and its invoices becoming visible to the relay, say) are one method. The parts live in
modules of their own, by concern; this class only puts them together behind one engine.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.store.approvals import ApprovalsRepository, DraftNotFound
from accounting.store.audit import AuditRepository, StoredChunk
from accounting.store.engine import DEFAULT_BUSY_TIMEOUT, LeaseLost, create_engine
from accounting.store.invoices import AUTOMATIC, InvoicesRepository, StagedCreditNote, StagedInvoice
from accounting.store.issued import IssuedDocumentsRepository
from accounting.store.issuing import Approval, Issued
from accounting.store.migrate import upgrade
from accounting.store.outbox import OutboxCounts, OutboxRepository, OutboxRow, OutboxStatus
from accounting.store.refusals import PeriodRefusal, RefusalsRepository
from accounting.store.replies import (
    NOT_ASKED,
    WAITING,
    ChunkToStore,
    RecordRow,
    RejectedChunk,
    RepliesRepository,
    StoredReply,
    UsageRow,
)
from accounting.store.reports import (
    ACTIVE,
    LEASED,
    ReportExists,
    ReportRecord,
    ReportsRepository,
    ReportsStatus,
)
from accounting.store.usage import UsageRepository

__all__ = [
    "ACTIVE",
    "AUTOMATIC",
    "LEASED",
    "NOT_ASKED",
    "WAITING",
    "Approval",
    "ChunkToStore",
    "DraftNotFound",
    "Issued",
    "LeaseLost",
    "OutboxCounts",
    "OutboxRow",
    "OutboxStatus",
    "PeriodRefusal",
    "RecordRow",
    "RejectedChunk",
    "ReportExists",
    "ReportRecord",
    "ReportStore",
    "ReportsStatus",
    "StagedCreditNote",
    "StagedInvoice",
    "StoredChunk",
    "StoredReply",
    "UsageRow",
    "create_engine",
]


class ReportStore(
    ReportsRepository,
    RepliesRepository,
    UsageRepository,
    InvoicesRepository,
    IssuedDocumentsRepository,
    ApprovalsRepository,
    OutboxRepository,
    RefusalsRepository,
    AuditRepository,
):
    """Async access to the store (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(
        cls, url: str, *, migrate: bool = True, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> ReportStore:
        """Connect and (by default) bring the schema to the newest migration."""
        engine = create_engine(url, busy_timeout)
        if migrate:
            await upgrade(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()
