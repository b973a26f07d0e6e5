"""outbox ready_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:00:00

When each outbox row was made ready for the relay (a report's rows are written not ready while it
is priced, and made ready when it is issued, maybe days later for a draft): what the relay's lag
and the age of its backlog are measured from. A nullable column only: the previous release runs on
this schema unchanged (it writes no ``ready_at``), and rows without one count from ``created_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Only timings are lost: without it lag and backlog age count from each row's created_at.
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("ready_at")
