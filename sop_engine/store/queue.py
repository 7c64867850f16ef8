"""The queue: claims of runs by workers, heartbeats, and releases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, text, update
from sqlmodel import select

from ..events import Event, utcnow
from ..liveness import orphaned
from ..states import RUN_TERMINAL, RunStatus, TransitionError
from ..tables import (
    BatchRow,
    RunRow,
)
from .journal import Journal

RELEASED = "released: the database was unavailable"
RUNS = RunRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claim:
    """A run a worker holds now, and the event of its claim (None when it held the run already)."""

    run: RunRow
    event: Event | None


class RunHeld(TransitionError):
    """Another worker holds the run and may be alive."""

    def __init__(self, run_id: str, holder: str, heartbeat: datetime | None) -> None:
        beat = heartbeat if heartbeat is None or heartbeat.tzinfo else heartbeat.replace(tzinfo=UTC)
        ago = f"{(utcnow() - beat).total_seconds():.0f} s ago" if beat else "never"
        super().__init__(
            f"run {run_id} is held by {holder} (last heartbeat {ago}), which looks alive: "
            "wait for it, cancel the run, or take it over with --force if it is hung"
        )
        self.holder = holder


def _claimed(
    worker: str, status: RunStatus = RunStatus.QUEUED, holder: str | None = None, forced: bool = False
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The change of a claim: the run goes to `worker`, running, with a fresh heartbeat."""
    run: dict[str, Any] = {"worker": worker, "heartbeat_at": utcnow()}
    if status != RunStatus.RUNNING:
        run["status"] = RunStatus.RUNNING.value
    data: dict[str, Any] = {"status": RunStatus.RUNNING.value, "worker": worker}
    if holder is not None:
        data.update(taken_over_from=holder, forced=forced)
    return ("run.updated", data, {"run": run})


class Queue(Journal):
    def claim_next_run(self, worker: str, batch_id: str | None = None) -> Claim | None:
        """Takes the queued run of highest priority, oldest first (of one batch, when named), leaving out
        batches that have as many runs going as their concurrency. Safe with several worker processes:
        the claim goes through the gate (queued -> running), which lets one of them have it."""
        going = (
            select(func.count())
            .select_from(RunRow.__table__.alias("other"))  # type: ignore[attr-defined]
            .where(text("other.batch_id = runs.batch_id"), text("other.status IN ('running', 'paused')"))
            .scalar_subquery()
        )
        cap = select(BatchRow.concurrency).where(BatchRow.id == RunRow.batch_id).scalar_subquery()
        query = select(RunRow.id).where(RunRow.status == "queued")
        query = query.where((RunRow.batch_id == None) | (going < cap))  # noqa: E711
        if batch_id is not None:
            query = query.where(RunRow.batch_id == batch_id)
        query = query.order_by(RunRow.priority, RunRow.created_at).limit(1)
        while True:
            with self._write() as conn:
                candidate = conn.execute(query).scalar_one_or_none()
                if candidate is None:
                    return None
                try:
                    [event] = self._apply(conn, candidate, [_claimed(worker)], None)
                except TransitionError:  # another worker took it first
                    continue
            return Claim(self.run(candidate), event)  # type: ignore[arg-type]

    def claim_run(self, run_id: str, worker: str, force: bool = False, queued_only: bool = False) -> Claim:
        """This worker takes the run: a queued one, or one whose holder is gone (a dead process of this
        machine, or a silent heartbeat); with `force`, one whose holder is alive too (hung); with
        `queued_only`, only a queued one (a paused run waits for a person's say, whoever held it). A run this
        worker holds already is returned as it is. Raises RunHeld when another worker holds it and may
        be alive, TransitionError when the run ended or does not exist."""
        with self._write() as conn:
            found = conn.execute(
                select(RUNS.c.status, RUNS.c.worker, RUNS.c.heartbeat_at).where(RUNS.c.id == run_id)
            ).first()
            if found is None:
                raise TransitionError(f"there is no run {run_id}")
            status = RunStatus(found.status)
            if queued_only and status != RunStatus.QUEUED:  # a job delivers queued runs only
                raise TransitionError(f"run {run_id} is {status}, not queued")
            if status in RUN_TERMINAL:
                raise TransitionError(f"run {run_id} is {status}: only a running, paused or queued run can be resumed")
            holder = found.worker if status != RunStatus.QUEUED else None
            if holder == worker:
                return Claim(self.run(run_id), None)  # type: ignore[arg-type]
            alive = holder is not None and not orphaned(holder, found.heartbeat_at, worker)
            if alive and not force:
                raise RunHeld(run_id, holder, found.heartbeat_at)  # type: ignore[arg-type]
            [event] = self._apply(conn, run_id, [_claimed(worker, status, holder, forced=alive)], holder)
        return Claim(self.run(run_id), event)  # type: ignore[arg-type]

    def release_claim(self, run_id: str, worker: str, reason: str = RELEASED) -> bool:
        """Puts a run this worker holds back in the queue, with its run.updated event, in one transaction:
        False when the worker no longer holds it running."""
        change = {"run": {"status": "queued", "worker": None, "heartbeat_at": None}}
        try:
            self.record_many(run_id, [("run.updated", {"status": "queued", "reason": reason}, change)], worker)
        except TransitionError:
            return False
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

    def queue_by_priority(self) -> list[tuple[int, int, datetime]]:
        """The queue, by priority: (priority, queued runs, the oldest one's creation), on the status index."""
        query = (
            select(RunRow.priority, func.count(), func.min(RunRow.created_at))
            .where(RunRow.status == "queued")
            .group_by(RunRow.priority)
        )
        with self.reading() as s:
            return [(priority, count, oldest) for priority, count, oldest in s.exec(query)]  # type: ignore[call-overload]
