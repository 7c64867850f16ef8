"""What the job queue (Procrastinate, on PostgreSQL) must deliver: queued runs that have no job waiting, and
jobs whose run no longer needs them. The runs table stays the authority; a job is only delivery, matched to
its run by its queueing lock (the run's id), which Procrastinate keeps unique among waiting jobs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from ..liveness import STALE
from ..migrations import JOB_TABLE as JOBS
from .database import Database

# a run's job: Procrastinate's table, the run's id as the job's queueing lock. A queued run with no job
# WAITING gets one, even while a job fetched for it is still ending (a run handed back goes at once; the
# duplicate, if any, is dropped at the claim). A batch's room counts jobs TAKEN too: waiting, or fetched by a
# worker that is alive (one gone silent does not hold a place)
WAITING = f"EXISTS (SELECT 1 FROM {JOBS} j WHERE j.queueing_lock = r.id AND j.status = 'todo')"
TAKEN = f"""EXISTS (
    SELECT 1 FROM {JOBS} j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
    WHERE j.queueing_lock = r.id
      AND (j.status = 'todo' OR (j.status = 'doing' AND w.last_heartbeat > now() - make_interval(secs => {STALE}))))"""

# queued runs with no job waiting, highest priority and oldest first; a batch's only as many as it has room
# for (its concurrency, less its runs that go or have a job), counted in SQL before the limit, so that a big
# batch cannot hide the runs behind it
_UNDELIVERED = text(
    f"""
    WITH busy AS (
        SELECT r.batch_id, count(*) AS n FROM runs r
        WHERE r.batch_id IS NOT NULL AND (r.status IN ('running', 'paused') OR (r.status = 'queued' AND {TAKEN}))
        GROUP BY r.batch_id
    ), candidates AS (
        SELECT r.id, r.priority, r.created_at, r.batch_id,
               row_number() OVER (PARTITION BY r.batch_id ORDER BY r.priority, r.created_at) AS place
        FROM runs r WHERE r.status = 'queued' AND NOT {WAITING}
    )
    SELECT c.id, c.priority FROM candidates c
    LEFT JOIN batches b ON b.id = c.batch_id
    LEFT JOIN busy ON busy.batch_id = c.batch_id
    WHERE c.batch_id IS NULL OR c.place <= b.concurrency - coalesce(busy.n, 0)
    ORDER BY c.priority, c.created_at
    LIMIT :limit
    """
)
_NEEDLESS = text(
    f"""
    SELECT j.id FROM {JOBS} j JOIN runs r ON r.id = j.queueing_lock
    WHERE j.status = 'todo' AND r.status IN ('completed', 'failed', 'cancelled')
    LIMIT :limit
    """
)


@dataclass(frozen=True)
class Undelivered:
    run_id: str
    priority: int  # the run's: 0 high, 1 normal, 2 low


class Deliveries(Database):
    def undelivered_runs(self, limit: int = 1000) -> list[Undelivered]:
        """Queued runs to deliver now: no job waits for them, and their batch has room."""
        with self.reading() as s:
            return [Undelivered(row.id, row.priority) for row in s.execute(_UNDELIVERED, {"limit": limit})]

    def needless_jobs(self, limit: int = 1000) -> list[int]:
        """Waiting jobs whose run ended (cancelled while queued, say): to cancel."""
        with self.reading() as s:
            return [row.id for row in s.execute(_NEEDLESS, {"limit": limit})]
