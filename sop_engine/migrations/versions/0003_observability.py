"""What a run cost (per run and per step), its Playwright trace, and the trace context it was created in.

Revision ID: 0003_observability
Revises: 0002_creators_and_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_observability"
down_revision = "0002_creators_and_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("cost", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("trace", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("trace_context", sa.String(), nullable=True))
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("cost", sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch copy of runs would trip the foreign keys pointing at it
    for column in ("trace_context", "trace", "cost"):
        op.drop_column("runs", column)
    op.drop_column("step_runs", "cost")
