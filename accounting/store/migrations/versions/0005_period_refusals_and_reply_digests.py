"""period refusals and reply digests

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 15:00:00

A PeriodClosed the billing calendar refuses (a period not ended yet, or an id whose bounds are not
the calendar's) is stored here with its reason; it is not a report, so it never blocks the real
close of that period. Each raw reply gets the digest it was stored with. A new table and a nullable
column only: the previous release runs on this schema unchanged (it stores replies without one).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The digest of each raw reply as stored, which `reports reconcile` checks the body against
    # (rows stored before have none: reconcile counts them as unverifiable, not as a mismatch).
    op.add_column("reply_chunks", sa.Column("sha256", sa.String(71), nullable=True))
    op.create_table(
        "period_refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("period_id", sa.String(64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_period_refusals"),
    )
    op.create_index("ix_period_refusals_period_id", "period_refusals", ["period_id"])


def downgrade() -> None:
    op.drop_index("ix_period_refusals_period_id", table_name="period_refusals")
    op.drop_table("period_refusals")
    with op.batch_alter_table("reply_chunks") as batch:
        batch.drop_column("sha256")
