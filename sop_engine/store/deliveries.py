"""What the job queue (Procrastinate, on PostgreSQL) must deliver: queued runs that have no job waiting, and
jobs whose run no longer needs them. The runs table stays the authority; a job is only delivery, matched to
its run by its queueing lock (the run's id), which Procrastinate keeps unique among waiting jobs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from .database import Database

JOBS = "procrastinate_jobs"  # Procrastinate's own table of jobs

_UNDELIVERED = text(
    f"""
    SELECT r.id, r.priority, r.batch_id FROM runs r
    WHERE r.status = 'queued'
      AND NOT EXISTS (SELECT 1 FROM {JOBS} j WHERE j.queueing_lock = r.id AND j.status = 'todo')
    ORDER BY r.priority, r.created_at
    LIMIT :limit
    """
)
# per batch with runs to deliver: its concurrency, and how many of its runs go or wait with a job already
_BATCH_ROOM = text(
    f"""
    SELECT b.id, b.concurrency, (
        SELECT count(*) FROM runs r WHERE r.batch_id = b.id AND (
            r.status IN ('running', 'paused')
            OR (r.status = 'queued' AND EXISTS (
                SELECT 1 FROM {JOBS} j WHERE j.queueing_lock = r.id AND j.status = 'todo')))
    ) AS busy
    FROM batches b WHERE b.id = ANY(:ids)
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
        """Queued runs with no job waiting, highest priority and oldest first, leaving out a batch's runs
        beyond its concurrency (counting those that go, and those with a job already)."""
        with self.reading() as s:
            found = s.execute(_UNDELIVERED, {"limit": limit}).all()
            batches = sorted({row.batch_id for row in found if row.batch_id})
            room = {}
            if batches:
                for batch in s.execute(_BATCH_ROOM, {"ids": batches}):
                    room[batch.id] = batch.concurrency - batch.busy
        chosen = []
        for row in found:
            if row.batch_id:
                if room.get(row.batch_id, 0) <= 0:
                    continue
                room[row.batch_id] -= 1
            chosen.append(Undelivered(row.id, row.priority))
        return chosen

    def needless_jobs(self, limit: int = 1000) -> list[int]:
        """Waiting jobs whose run ended (cancelled while queued, say): to cancel."""
        with self.reading() as s:
            return [row.id for row in s.execute(_NEEDLESS, {"limit": limit})]
