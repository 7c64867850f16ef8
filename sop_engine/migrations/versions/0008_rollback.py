"""Where a run's rollback is: requested, running, or done with its counts (sop_engine.rollback).

Revision ID: 0008_rollback
Revises: 0007_breaker
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_rollback"
down_revision = "0007_breaker"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("rollback", sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch copy of runs would trip the foreign keys pointing at it
    op.drop_column("runs", "rollback")
