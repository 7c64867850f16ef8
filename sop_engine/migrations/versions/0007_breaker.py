"""Circuit breakers per target host.

Revision ID: 0007_breaker
Revises: 0006_hooks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_breaker"
down_revision = "0006_hooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breakers",
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host"),
        sa.CheckConstraint("state IN ('closed', 'open', 'half_open')", name="ck_breakers_state"),
    )


def downgrade() -> None:
    op.drop_table("breakers")
