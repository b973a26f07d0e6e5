"""credit notes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 03:00:00

A forced replay cancels each invoice it corrects with a credit note of its own, relayed through
the outbox before the corrected invoice (its body lives here, as an invoice's lives in invoices).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credit_notes",
        sa.Column("credit_note_id", sa.String(36), nullable=False),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("period_id", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("credits", sa.String(36), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", sa.String(40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.report_id"], name="fk_credit_notes_report_id_reports"
        ),
        sa.PrimaryKeyConstraint("credit_note_id", name="pk_credit_notes"),
    )
    op.create_index("ix_credit_notes_report_id", "credit_notes", ["report_id"])
    op.create_index("ix_credit_notes_credits", "credit_notes", ["credits"])


def downgrade() -> None:
    op.drop_index("ix_credit_notes_credits", table_name="credit_notes")
    op.drop_index("ix_credit_notes_report_id", table_name="credit_notes")
    op.drop_table("credit_notes")
