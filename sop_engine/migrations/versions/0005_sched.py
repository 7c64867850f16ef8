"""Schedules: an SOP run on a cron expression or an interval, and each tick of theirs recorded once.

Revision ID: 0005_sched
Revises: 0004_dead
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_sched"
down_revision = "0004_dead"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("sop_id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column("overlap", sa.String(), nullable=False),
        sa.Column("catch_up", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_fire_at", TIME, nullable=True),
        sa.Column("next_fire_at", TIME, nullable=True),
        sa.CheckConstraint("overlap IN ('skip', 'queue')", name="ck_schedules_overlap"),
        sa.CheckConstraint("catch_up IN ('once', 'none')", name="ck_schedules_catch_up"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_schedules_sop_id", "schedules", ["sop_id"])
    op.create_table(
        "schedule_firings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.String(), nullable=False),
        sa.Column("fire_at", TIME, nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("schedule_id", "fire_at", name="uq_schedule_firings_tick"),
    )
    op.create_index("ix_schedule_firings_schedule_id", "schedule_firings", ["schedule_id"])
    op.create_index("ix_schedule_firings_run_id", "schedule_firings", ["run_id"])


def downgrade() -> None:
    op.drop_table("schedule_firings")
    op.drop_table("schedules")
