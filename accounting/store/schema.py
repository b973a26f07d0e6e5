"""The accounting store's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Money and quantities are stored as decimal strings, never floats: SQLite has no exact numeric.
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
    Column("raw", JSON, nullable=False),
    Column("carried_from", String(36), nullable=True),
    Column("stored_at", UtcDateTime, nullable=False),
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
    Index("ix_invoices_period_account", "period_id", "account_id"),
)

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
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("claim", String(36), nullable=True),
    Column("claimed_until", UtcDateTime, nullable=True),
)
