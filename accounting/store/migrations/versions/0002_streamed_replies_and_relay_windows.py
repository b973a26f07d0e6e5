"""streamed replies (gathers, reply_chunks, usage_records) and relay windows (outbox ready/final)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:30:00

Replies used to be stored whole at the end of a gather, as a JSON list of raw bodies per service
(``service_replies.raw``). They are now written chunk by chunk as they arrive, with their records
in rows of their own. Existing raw bodies move to the new tables (the records of each good reply
too, so ``replay --service`` keeps reusing them), then the old column goes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gathers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.report_id"], name=op.f("fk_gathers_report_id_reports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gathers")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_gathers_report_id"), "gathers", ["report_id"], unique=False)
    op.create_table(
        "reply_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gather_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_chunks")),
    )
    op.create_index("ix_reply_chunks_gather_service", "reply_chunks", ["gather_id", "service"])
    op.create_table(
        "usage_records",
        sa.Column("gather_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=256), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.Text(), nullable=False),
    )
    op.create_index(
        "ux_usage_records_account_resource",
        "usage_records",
        ["gather_id", "account_id", "service", "resource_id", "metric"],
        unique=True,
    )
    with op.batch_alter_table("service_replies") as batch_op:
        batch_op.add_column(sa.Column("gather_id", sa.Integer(), nullable=True))
    _move_raw_replies()
    with op.batch_alter_table("service_replies") as batch_op:
        batch_op.drop_column("raw")

    with op.batch_alter_table("invoices") as batch_op:
        batch_op.create_index("ix_invoices_report_account", ["report_id", "account_id"], unique=False)

    with op.batch_alter_table("outbox") as batch_op:
        batch_op.alter_column("body", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("ready", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_outbox_claim"), ["claim"], unique=False)
    op.execute("UPDATE outbox SET final = true WHERE message_type IN ('ReportCompleted', 'ReportAborted')")
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["id"],
        unique=False,
        sqlite_where=sa.text("sent_at IS NULL"),
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def _move_raw_replies() -> None:
    """One legacy gather per report that has replies; each raw body a chunk; good replies' records."""
    bind = op.get_bind()
    meta = sa.MetaData()
    replies = sa.Table("service_replies", meta, autoload_with=bind)
    gathers = sa.Table("gathers", meta, autoload_with=bind)
    chunks = sa.Table("reply_chunks", meta, autoload_with=bind)
    records = sa.Table("usage_records", meta, autoload_with=bind)
    rows = bind.execute(sa.select(replies).order_by(replies.c.report_id, replies.c.service)).all()
    gather_of: dict[str, int] = {}
    for row in rows:
        if row.report_id not in gather_of:
            inserted = bind.execute(
                gathers.insert().values(
                    report_id=row.report_id, attempt="legacy", owner=None, started_at=_utc(row.stored_at)
                )
            )
            assert inserted.inserted_primary_key is not None
            gather_of[row.report_id] = int(inserted.inserted_primary_key[0])
        gather_id = gather_of[row.report_id]
        bind.execute(
            replies.update()
            .where(replies.c.report_id == row.report_id, replies.c.service == row.service)
            .values(gather_id=gather_id)
        )
        raw = row.raw if isinstance(row.raw, list) else json.loads(row.raw or "[]")
        parsed = [(body, _parsed(body)) for body in raw]
        good = row.state == "ok" and all(value is not None for _, value in parsed)
        answer = [record for _, value in parsed if value for record in (value.get("records") or [])]
        repeated = _repeated(answer) if good else None
        if repeated is not None:
            # The old store accepted an answer that lists a resource's metric twice; the new one
            # refuses it. It is kept for the audit but not reused: a replay asks the service again.
            good = False
            bind.execute(
                replies.update()
                .where(replies.c.report_id == row.report_id, replies.c.service == row.service)
                .values(
                    state="failed",
                    reason_code="invalid_reply",
                    reason=f"found by migration 0002: {repeated} appears twice in the answer",
                )
            )
        for body, value in parsed:
            chunk_records = (value.get("records") or []) if value else []
            bind.execute(
                chunks.insert().values(
                    gather_id=gather_id,
                    service=row.service,
                    seq=(value.get("chunk") or {}).get("seq", 0) if value else None,
                    request_id=row.request_id,
                    records=len(chunk_records),
                    accepted=good,
                    body=body,
                    received_at=_utc(row.stored_at),
                )
            )
        if good and answer:
            bind.execute(
                records.insert(),
                [
                    {
                        "gather_id": gather_id,
                        "account_id": record["account_id"],
                        "service": row.service,
                        "resource_id": record["resource_id"],
                        "metric": record["metric"],
                        "unit": record["unit"],
                        "quantity": str(record["quantity"]),
                    }
                    for record in answer
                ],
            )


def _repeated(records: list[dict[str, Any]]) -> str | None:
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        key = (record["account_id"], record["resource_id"], record["metric"])
        if key in seen:
            return f"account {key[0]!r} resource {key[1]!r} metric {key[2]!r}"
        seen.add(key)
    return None


def _parsed(body: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


def downgrade() -> None:
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_claim"))
        batch_op.drop_column("final")
        batch_op.drop_column("ready")
    with op.batch_alter_table("invoices") as batch_op:
        batch_op.drop_index("ix_invoices_report_account")
    with op.batch_alter_table("service_replies") as batch_op:
        batch_op.add_column(sa.Column("raw", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.drop_column("gather_id")
    op.drop_index("ux_usage_records_account_resource", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index("ix_reply_chunks_gather_service", table_name="reply_chunks")
    op.drop_table("reply_chunks")
    op.drop_index(op.f("ix_gathers_report_id"), table_name="gathers")
    op.drop_table("gathers")
