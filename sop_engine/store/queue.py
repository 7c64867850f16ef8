"""The queue: claims of runs by workers, heartbeats, and releases."""

from __future__ import annotations

from sqlalchemy import func, insert, text, update
from sqlmodel import select

from ..events import utcnow
from ..tables import (
    BatchRow,
    RunEventRow,
    RunRow,
)
from .database import Database

RELEASED = "released: the database was unavailable"


class Queue(Database):
    def claim_next_run(self, worker: str, batch_id: str | None = None) -> RunRow | None:
        """Takes the queued run of highest priority, oldest first (of one batch, when named), leaving out
        batches that have as many runs going as their concurrency. Safe with several worker processes:
        the conditional update succeeds for one of them only."""
        going = (
            select(func.count())
            .select_from(RunRow.__table__.alias("other"))  # type: ignore[attr-defined]
            .where(text("other.batch_id = runs.batch_id"), text("other.status IN ('running', 'paused')"))
            .scalar_subquery()
        )
        cap = select(BatchRow.concurrency).where(BatchRow.id == RunRow.batch_id).scalar_subquery()
        while True:
            with self.session() as s, s.begin():
                query = select(RunRow.id).where(RunRow.status == "queued")
                query = query.where((RunRow.batch_id == None) | (going < cap))  # noqa: E711
                if batch_id is not None:
                    query = query.where(RunRow.batch_id == batch_id)
                candidate = s.exec(query.order_by(RunRow.priority, RunRow.created_at).limit(1)).first()
                if candidate is None:
                    return None
                taken = s.execute(
                    update(RunRow)
                    .where(RunRow.id == candidate, RunRow.status == "queued")
                    .values(status="running", worker=worker, heartbeat_at=utcnow())
                )
                if taken.rowcount == 1:
                    return s.get(RunRow, candidate)

    def release_claim(self, run_id: str, worker: str) -> bool:
        """Puts a run this worker holds back in the queue, with its run.updated event, in one transaction:
        False when the worker no longer holds it running."""
        runs = RunRow.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            last = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.worker == worker, runs.c.status == "running")
                .values(status="queued", worker=None, heartbeat_at=None, last_seq=runs.c.last_seq + 1)
                .returning(runs.c.last_seq)
            ).scalar_one_or_none()
            if last is None:
                return False
            data = {"status": "queued", "reason": RELEASED}
            conn.execute(
                insert(RunEventRow.__table__),  # type: ignore[attr-defined]
                [{"run_id": run_id, "seq": last, "type": "run.updated", "data": data, "at": utcnow()}],
            )
        return True

    def heartbeat(self, worker: str, run_ids: list[str]) -> None:
        """The worker still holds these runs."""
        if run_ids:
            with self.session() as s, s.begin():
                s.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(run_ids), RunRow.worker == worker)  # type: ignore[attr-defined]
                    .values(heartbeat_at=utcnow())
                )

    def runs_held(self) -> list[RunRow]:
        """Runs some worker says it is executing."""
        with self.reading() as s:
            return list(s.exec(select(RunRow).where(RunRow.status == "running")))
