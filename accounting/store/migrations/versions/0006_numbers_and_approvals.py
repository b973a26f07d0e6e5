"""invoice numbers and approvals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 18:00:00

Issued invoices and credit notes get a number in their series (unique), the series their last
number, and each approval or rejection of a priced report a row. Nullable columns and new tables
only: the previous release runs on this schema unchanged (it issues documents without numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("number", sa.String(40), nullable=True))
        batch.create_index("ux_invoices_number", ["number"], unique=True)
    with op.batch_alter_table("credit_notes") as batch:
        batch.add_column(sa.Column("number", sa.String(40), nullable=True))
        batch.create_index("ux_credit_notes_number", ["number"], unique=True)
    op.create_table(
        "number_series",
        sa.Column("series", sa.String(64), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("series", name="pk_number_series"),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["reports.report_id"], name="fk_approvals_report_id_reports"),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
    )
    op.create_index("ix_approvals_report_id", "approvals", ["report_id"])


def downgrade() -> None:
    # Dropping these would lose what cannot be given back: the series counters (a later upgrade
    # would number from 1 again, reusing numbers already sent) and who approved what.
    bind = op.get_bind()
    numbered = bind.execute(sa.text("SELECT count(*) FROM number_series")).scalar_one()
    decided = bind.execute(sa.text("SELECT count(*) FROM approvals")).scalar_one()
    if numbered or decided:
        raise RuntimeError(
            f"refusing to downgrade below 0006: {numbered} invoice series and {decided} approvals "
            "are stored, and dropping them would let numbers be given twice and lose who approved "
            "what. Roll forward instead, or restore the backup taken before the upgrade"
        )
    op.drop_index("ix_approvals_report_id", table_name="approvals")
    op.drop_table("approvals")
    op.drop_table("number_series")
    with op.batch_alter_table("credit_notes") as batch:
        batch.drop_index("ux_credit_notes_number")
        batch.drop_column("number")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_index("ux_invoices_number")
        batch.drop_column("number")
