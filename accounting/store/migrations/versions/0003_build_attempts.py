"""build attempts and the last error on reports

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 02:00:00

A report whose build fails is retried a bounded number of times, then aborted as ``internal``:
it is never resumed into the same failure forever.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch_op:
        batch_op.add_column(sa.Column("build_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("build_attempts")
