"""Database tables. Only store.py opens sessions on them; a change to them needs a revision in migrations/."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

ROLES = ("viewer", "operator", "admin")  # of an API token, each allowed what the one before is, and more


class SopDocumentRow(SQLModel, table=True):
    __tablename__ = "sop_documents"
    __table_args__ = (UniqueConstraint("sop_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    sop_id: str = Field(index=True)
    version: int
    name: str | None = None
    content_hash: str = Field(index=True)
    source: str = Field(sa_column=Column(Text, nullable=False))
    base_dir: str | None = None  # the folder of the file it was loaded from: relative upload paths start there
    created_at: datetime
    created_by: str | None = None  # the user who stored this version; the creator of version 1 owns the SOP id

    @property
    def base_dir_path(self) -> Path | None:
        return Path(self.base_dir) if self.base_dir else None


class BatchRow(SQLModel, table=True):
    """One SOP over a data file: a run per row."""

    __tablename__ = "batches"

    id: str = Field(primary_key=True)
    document_id: int = Field(foreign_key="sop_documents.id")
    sop_id: str = Field(index=True)
    sop_version: int
    source: str  # the data file's name
    concurrency: int
    priority: int = 1
    rows: int = 0
    status: str = "running"  # running, completed (every row ended), cancelled
    created_at: datetime
    created_by: str | None = None
    finished_at: datetime | None = None


class BatchItemRow(SQLModel, table=True):
    """A row of a batch: the run that carries it now (a retry makes a new run), or why it is invalid."""

    __tablename__ = "batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "row_number"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(foreign_key="batches.id", index=True)
    row_number: int
    run_id: str | None = Field(default=None, index=True)  # no foreign key: runs point back at batches
    invalid: str | None = None  # the reason the row does not fit the SOP's inputs
    attempts: int = 1  # runs made for this row


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_priority", "status", "priority", "created_at"),)

    id: str = Field(primary_key=True)
    document_id: int = Field(foreign_key="sop_documents.id")
    sop_id: str = Field(index=True)
    sop_version: int
    status: str
    priority: int = 1  # 0 high, 1 normal, 2 low
    last_seq: int = 0  # the run's latest event sequence number
    worker: str | None = None  # who holds it while it runs
    heartbeat_at: datetime | None = None
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outputs: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))
    waiting: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # why paused, what it needs
    secrets: str | None = Field(default=None, sa_column=Column(Text))  # all inputs, encrypted, when some are secret
    breakpoints: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    batch_id: str | None = Field(default=None, foreign_key="batches.id", index=True)
    row_number: int | None = None
    created_at: datetime
    created_by: str | None = Field(default=None, index=True)  # the user who started it (a batch's: its creator)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cost: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # what it cost (sop_engine.cost)
    trace: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # its Playwright trace, or why none
    trace_context: str | None = None  # W3C traceparent of the request that created it: its spans continue that trace
    # where its rollback is (sop_engine.rollback): requested, running, or done with its counts
    rollback: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class StepRunRow(SQLModel, table=True):
    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    key: str  # add[0].type
    step_id: str
    parent_key: str | None = None
    action: str
    status: str
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    outputs: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    sealed_outputs: str | None = Field(default=None, sa_column=Column(Text))  # when a secret shows in them
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    reason: str | None = None  # why skipped or blocked
    artifacts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cost: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # what the step cost, where it applies

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds() * 1000, 1)


class RunEventRow(SQLModel, table=True):
    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id")
    seq: int
    type: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime


class AuditRow(SQLModel, table=True):
    """Who did what to a run, and when: every control a person (or API client) used."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    at: datetime
    who: str
    action: str  # pause, resume, step, cancel, skip, retry, breakpoint, rerun, submit
    target: str | None = None  # the step key, for step controls
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ServerAuditRow(SQLModel, table=True):
    """Who did what to which run, server-wide: controls and bulk actions. No foreign key to runs: the line of a
    deleted run outlives it."""

    __tablename__ = "server_audit"
    __table_args__ = (Index("ix_server_audit_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime
    who: str
    action: str  # a control (retry, rerun, skip, …), or a bulk action: retry, rerun, delete
    run_id: str | None = Field(default=None, index=True)
    sop_id: str | None = None
    target: str | None = None  # the step key, for step controls
    outcome: str = "done"  # done, refused
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class CheckpointRow(SQLModel, table=True):
    """What puts a fresh browser back where a run was: each tab's URL, and cookies and local storage.
    One row per run, replaced as the run goes; never sent to the page or the feed."""

    __tablename__ = "checkpoints"

    run_id: str = Field(primary_key=True, foreign_key="runs.id")
    key: str  # the browser step after which it was taken
    at: datetime
    tabs: str = Field(sa_column=Column(Text, nullable=False))  # sealed: URLs may carry secrets
    storage: str | None = Field(default=None, sa_column=Column(Text))  # sealed: the user's cookies


class ApiTokenRow(SQLModel, table=True):
    """A named API token and its role. Only the token's SHA-256 is kept: the token itself is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="ck_api_tokens_role"),
        UniqueConstraint("name", name="uq_api_tokens_name"),
        UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str
    role: str  # viewer, operator, admin
    token_hash: str  # hex SHA-256 of the token
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None  # updated at most once a minute


class ScheduleRow(SQLModel, table=True):
    """An SOP run on a timetable (sop_engine.timetable): a cron expression in a zone, or an interval."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("overlap IN ('skip', 'queue')", name="ck_schedules_overlap"),
        CheckConstraint("catch_up IN ('once', 'none')", name="ck_schedules_catch_up"),
    )

    id: str = Field(primary_key=True)
    sop_id: str = Field(index=True)
    version: int | None = None  # None: the latest version when it fires
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # secrets masked
    secrets: str | None = Field(default=None, sa_column=Column(Text))  # all inputs, sealed, when some are secret
    overlap: str = "skip"  # skip: no run while its previous one is going; queue: a run anyway, queued behind
    catch_up: str = "once"  # once: the latest tick missed while down fires; none: missed ticks do not
    enabled: bool = True
    created_by: str | None = None
    created_at: datetime
    last_fire_at: datetime | None = None  # the latest tick dealt with (fired, skipped or missed)
    next_fire_at: datetime | None = None  # None: it never fires again


class ScheduleFiringRow(SQLModel, table=True):
    """One tick of a schedule, recorded once (the unique key: a second server's insert fails): the run it
    made, or why it made none."""

    __tablename__ = "schedule_firings"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_at", name="uq_schedule_firings_tick"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: str = Field(foreign_key="schedules.id", index=True)
    fire_at: datetime
    run_id: str | None = Field(default=None, index=True)  # no foreign key: the run's retention is its own
    outcome: str  # fired, skipped (overlap), missed (catch-up none), failed (the SOP or its inputs)
    detail: str | None = None
    recorded_at: datetime


class WebhookRow(SQLModel, table=True):
    """A URL called when runs (of one SOP, or of the whole server) end, fail, pause on a failed step, and when
    batches finish. Its signing secret is kept sealed with the server's key: shown once, at creation."""

    __tablename__ = "webhooks"

    id: str = Field(primary_key=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    scope: str = Field(index=True)  # "server", or the id of the SOP whose runs it follows
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(sa_column=Column(Text, nullable=False))  # sealed (sop_engine.vault)
    enabled: bool = True
    created_at: datetime
    created_by: str | None = None
    failures: int = 0  # deliveries in a row that ended failed (0 after one gets through)
    last_status: str | None = None  # the last attempt's: "200", "500", "timed out", ...
    last_attempt_at: datetime | None = None


class WebhookDeliveryRow(SQLModel, table=True):
    """The outbox: one notification of one webhook, written in the transaction of the change it tells of, and
    sent (again, with backoff) until its endpoint answers 2xx or it runs out of attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True)  # the X-SOP-Delivery header: the same on every attempt
    webhook_id: str = Field(index=True)  # no foreign key: a removed webhook's history stays
    run_id: str | None = Field(default=None, index=True)
    batch_id: str | None = None
    event: str  # run.completed, run.failed, run.cancelled, run.escalated, batch.finished
    body: str = Field(sa_column=Column(Text, nullable=False))  # the JSON sent, secrets masked
    status: str = "pending"  # pending, delivered, failed
    attempts: int = 0
    next_attempt_at: datetime  # when it is due; moved on while a process sends it (a lease)
    last_code: int | None = None
    last_error: str | None = None
    log: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # every attempt
    created_at: datetime
    finished_at: datetime | None = None


class BreakerRow(SQLModel, table=True):
    """A target host's circuit breaker (sop_engine.breakers), shared by every process on the database."""

    __tablename__ = "breakers"
    __table_args__ = (CheckConstraint("state IN ('closed', 'open', 'half_open')", name="ck_breakers_state"),)

    host: str = Field(primary_key=True)  # host:port, lower case
    state: str = "closed"  # closed, open (until opened_until), half_open (one trial, until trial_until)
    failures: int = 0  # consecutive failures counted since window_start
    window_start: datetime | None = None  # the first of those failures
    opened_until: datetime | None = None
    trial_until: datetime | None = None  # the trial's lease: past it, another attempt may take the trial
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    opens: int = 0  # how many times it opened, ever
    updated_at: datetime
