"""Who created each run, batch and SOP version; API tokens with names and roles, stored hashed.

Revision ID: 0002_creators_and_tokens
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_creators_and_tokens"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
CREATED = ("runs", "batches", "sop_documents")


def upgrade() -> None:
    for table in CREATED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("created_by", sa.String(), nullable=True))
    op.create_index("ix_runs_created_by", "runs", ["created_by"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(), nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.Column("last_used_at", TIME, nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="ck_api_tokens_role"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_runs_created_by", table_name="runs")
    for table in CREATED:
        # ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch copy of runs would trip the foreign keys pointing at it
        op.drop_column(table, "created_by")
