"""The server-level audit log: every control and bulk action on a run, kept after the run is deleted.

Revision ID: 0004_dead
Revises: 0003_observability
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_dead"
down_revision = "0003_observability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("sop_id", sa.String(), nullable=True),
        sa.Column("target", sa.String(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_server_audit_at", "server_audit", ["at"])
    op.create_index("ix_server_audit_run_id", "server_audit", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_server_audit_run_id", table_name="server_audit")
    op.drop_index("ix_server_audit_at", table_name="server_audit")
    op.drop_table("server_audit")
