"""The accounting store's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Money and quantities are stored as decimal strings, never floats: SQLite has no exact numeric.
A report's replies are stored as they arrive: one ``gathers`` row per attempt at gathering it,
each accepted chunk's raw body in ``reply_chunks`` and its records in ``usage_records`` (what
pricing reads back, account by account, so no report is ever held in memory whole).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} cannot be stored: times are UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

reports = Table(
    "reports",
    metadata,
    Column("report_id", String(36), primary_key=True),
    Column("period_id", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("period_start", UtcDateTime, nullable=False),
    Column("period_end", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("services", JSON, nullable=False),
    Column("requested", JSON, nullable=False),
    Column("carried_from", String(36), nullable=True),
    Column("supersedes", String(36), nullable=True),
    Column("currency", String(3), nullable=True),
    Column("total", String(40), nullable=True),
    Column("rate_card", JSON, nullable=True),
    Column("owner", String(128), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("build_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("period_id", "revision", name="uq_reports_period_revision"),
)

report_transitions = Table(
    "report_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False, default=""),
)

service_replies = Table(
    "service_replies",
    metadata,
    Column("report_id", String(36), ForeignKey("reports.report_id"), primary_key=True),
    Column("service", String(64), primary_key=True),
    Column("request_id", String(128), nullable=True),
    Column("state", String(16), nullable=False),
    Column("reason_code", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("records", Integer, nullable=False),
    Column("carried_from", String(36), nullable=True),
    Column("stored_at", UtcDateTime, nullable=False),
    Column("gather_id", Integer, nullable=True),
)

gathers = Table(
    "gathers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("attempt", String(32), nullable=False),
    Column("owner", String(128), nullable=True),
    Column("started_at", UtcDateTime, nullable=False),
    sqlite_autoincrement=True,  # never reuse an id: a gather id names one attempt for good
)

reply_chunks = Table(
    "reply_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gather_id", Integer, nullable=False),
    Column("service", String(64), nullable=False),
    Column("seq", Integer, nullable=True),  # None: a body that was not a valid reply (audit only)
    Column("request_id", String(128), nullable=True),
    Column("records", Integer, nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("body", Text, nullable=False),
    Column("sha256", String(71), nullable=True),  # "sha256:<hex>" of body when stored (None: before 0005)
    Column("received_at", UtcDateTime, nullable=False),
    Index("ix_reply_chunks_gather_service", "gather_id", "service"),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("gather_id", Integer, nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("service", String(64), nullable=False),
    Column("resource_id", String(256), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("unit", String(32), nullable=False),
    Column("quantity", Text, nullable=False),
    # Pricing reads a gather's records in account order; a service that lists one resource's
    # metric twice in one answer would be billed twice, so the store refuses it.
    Index(
        "ux_usage_records_account_resource",
        "gather_id",
        "account_id",
        "service",
        "resource_id",
        "metric",
        unique=True,
    ),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(36), primary_key=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("period_id", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total", String(40), nullable=False),
    Column("supersedes", String(36), nullable=True),
    Column("body", Text, nullable=False),
    Column("number", String(40), nullable=True),  # None while a draft (and in a body before 0006)
    Index("ix_invoices_period_account", "period_id", "account_id"),
    Index("ux_invoices_number", "number", unique=True),
    Index("ix_invoices_report_account", "report_id", "account_id"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_id", String(36), primary_key=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("period_id", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("credits", String(36), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("total", String(40), nullable=False),
    Column("body", Text, nullable=False),
    Column("number", String(40), nullable=True),
    Index("ux_credit_notes_number", "number", unique=True),
)
"""What a forced replay cancels: one row per superseded invoice, sent before its correction."""

number_series = Table(
    "number_series",
    metadata,
    Column("series", String(64), primary_key=True),
    Column("last", Integer, nullable=False),
)
"""The last number handed out in each series (``INV-2026-``), raised in the transaction that
issues the documents it numbers: a rolled-back issue gives its numbers back, so none is skipped."""

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("decision", String(16), nullable=False),  # "approved" or "rejected"
    Column("decided_by", String(255), nullable=False),
    Column("decided_at", UtcDateTime(), nullable=False),
    Column("reason", Text, nullable=False, default=""),
)
"""Who approved or rejected a priced report, and when (an automatic approval names its rule)."""

period_refusals = Table(
    "period_refusals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("period_id", String(64), nullable=False, index=True),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("period_end", UtcDateTime(), nullable=False),
    Column("requested_by", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("refused_at", UtcDateTime(), nullable=False),
)
"""A PeriodClosed the billing calendar refused (not a report: it never blocks the real close)."""

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(36), ForeignKey("reports.report_id"), nullable=False, index=True),
    Column("message_id", String(128), nullable=False, unique=True),
    Column("exchange", String(16), nullable=False),
    Column("routing_key", String(64), nullable=False),
    Column("message_type", String(64), nullable=False),
    Column("mandatory", Boolean, nullable=False),
    Column("body", Text, nullable=True),  # None for an invoice or credit note: its body is in its table
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("claim", String(36), nullable=True, index=True),
    Column("claimed_until", UtcDateTime, nullable=True),
    # False while a report's invoices are being written: the relay sees them all at once.
    Column("ready", Boolean, nullable=False, default=True),
    # When ``ready`` became true (0007): what relay lag and the backlog's age count from. None for a
    # row written before 0007 or by the release before it: readers fall back to ``created_at``.
    Column("ready_at", UtcDateTime, nullable=True),
    # The report's own event (ReportCompleted/ReportAborted): relayed after its other rows.
    Column("final", Boolean, nullable=False, default=False),
    Index(
        "ix_outbox_unsent",
        "id",
        sqlite_where=text("sent_at IS NULL"),
        postgresql_where=text("sent_at IS NULL"),
    ),
)
