"""Reading runs, their steps, events, audit trail and checkpoints; storing a new run."""

from __future__ import annotations

import statistics
import uuid
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import select

from ..events import Event, utcnow
from ..progress import progress, sized_loops
from ..tables import (
    AuditRow,
    CheckpointRow,
    RunEventRow,
    RunRow,
    SopDocumentRow,
    StepRunRow,
)
from .database import Database

STEP_EVENTS_MAX = 10_000  # events read about one step instance (its log lines, mostly)
TYPICAL_ROWS_MAX = 10_000  # step instances a typical duration is the median of


class Runs(Database):
    def create_run(
        self, document: SopDocumentRow, inputs: dict[str, Any], status: str, priority: int = 1, **extra: Any
    ) -> RunRow:
        """A new run, without its run.created event (create_run_announced writes both)."""
        run = _new_run(document, inputs, status, priority, **extra)
        with self.session() as s, s.begin():
            s.add(run)
        return run

    def create_run_announced(
        self, document: SopDocumentRow, inputs: dict[str, Any], status: str, priority: int = 1, **extra: Any
    ) -> tuple[RunRow, Event]:
        """A new run with its run.created event (seq 1), in one transaction: no worker can claim it before
        its creation is recorded."""
        run = _new_run(document, inputs, status, priority, last_seq=1, **extra)
        event = Event(run.id, 1, "run.created", {"status": status, "sop_id": run.sop_id, "inputs": inputs})
        with self.session() as s, s.begin():
            s.add(run)
            s.flush()
            s.add(RunEventRow(run_id=run.id, seq=1, type=event.type, data=event.data, at=event.at))
        return run, event

    def run(self, run_id: str) -> RunRow | None:
        with self.reading() as s:
            return s.get(RunRow, run_id)

    def runs(
        self,
        status: str | None = None,
        sop_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        created_by: str | None = None,
    ) -> tuple[list[RunRow], int]:
        with self.reading() as s:
            query = select(RunRow)
            counting = select(func.count()).select_from(RunRow)
            filters = ((RunRow.status, status), (RunRow.sop_id, sop_id), (RunRow.created_by, created_by))
            for column, value in filters:
                if value is not None:
                    query = query.where(column == value)
                    counting = counting.where(column == value)
            rows = s.exec(query.order_by(RunRow.created_at.desc()).offset(offset).limit(limit)).all()
            return list(rows), s.exec(counting).one()

    def steps(self, run_id: str) -> list[StepRunRow]:
        with self.reading() as s:
            return list(s.exec(select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id)))

    def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[RunEventRow]:
        with self.reading() as s:
            query = select(RunEventRow).where(RunEventRow.run_id == run_id, RunEventRow.seq > since)
            return list(s.exec(query.order_by(RunEventRow.seq).limit(limit)))

    def restorations(self, run_id: str) -> list[dict[str, Any]]:
        """Each time the run's browser was rebuilt from a checkpoint (its run.restored events), oldest first."""
        return self.events_of(run_id, "run.restored")

    def events_of(self, run_id: str, type_: str) -> list[dict[str, Any]]:
        """The data of the run's events of one type, in order."""
        with self.reading() as s:
            query = select(RunEventRow.data).where(RunEventRow.run_id == run_id, RunEventRow.type == type_)
            return list(s.exec(query.order_by(RunEventRow.seq)))

    def step_states(self, run_id: str) -> list[tuple[str, str, str]]:
        """(key, step id, status) of each of the run's step instances."""
        with self.reading() as s:
            query = select(StepRunRow.key, StepRunRow.step_id, StepRunRow.status).where(StepRunRow.run_id == run_id)
            return [tuple(row) for row in s.exec(query).all()]  # type: ignore[misc]

    def progress(self, run_id: str) -> dict[str, Any]:
        """How far the run is (sop_engine.progress), from its step rows and its loops' sizes."""
        with self.reading() as s:
            rows = s.exec(select(StepRunRow.key, StepRunRow.status).where(StepRunRow.run_id == run_id)).all()
        return progress(rows, sized_loops(self.events_of(run_id, "loop.sized")))

    def last_seq(self, run_id: str) -> int:
        run = self.run(run_id)
        return run.last_seq if run else 0

    def audit(self, run_id: str) -> list[AuditRow]:
        with self.reading() as s:
            return list(s.exec(select(AuditRow).where(AuditRow.run_id == run_id).order_by(AuditRow.id)))

    def step_counts(self, run_id: str) -> dict[str, int]:
        with self.reading() as s:
            query = select(StepRunRow.status, func.count()).where(StepRunRow.run_id == run_id)
            return dict(s.exec(query.group_by(StepRunRow.status)).all())

    def typical_durations(self, sop_id: str, runs: int = 5) -> dict[str, float]:
        """Mean seconds per step id over the SOP's latest completed runs, for ETAs."""
        with self.reading() as s:
            recent = select(RunRow.id).where(RunRow.sop_id == sop_id, RunRow.status == "completed")
            recent = recent.order_by(RunRow.created_at.desc()).limit(runs)
            rows = s.exec(
                select(StepRunRow.step_id, StepRunRow.started_at, StepRunRow.finished_at).where(
                    StepRunRow.run_id.in_(recent),
                    StepRunRow.status == "completed",  # type: ignore[attr-defined]
                )
            ).all()
        totals: dict[str, list[float]] = {}
        for step_id, started, finished in rows:
            if started and finished:
                totals.setdefault(step_id, []).append((finished - started).total_seconds())
        return {k: sum(v) / len(v) for k, v in totals.items()}

    def step(self, run_id: str, key: str) -> StepRunRow | None:
        with self.reading() as s:
            query = select(StepRunRow).where(StepRunRow.run_id == run_id, StepRunRow.key == key)
            return s.exec(query).first()

    def step_events(self, run_id: str, key: str) -> list[RunEventRow]:
        """The run's events about one step instance, in order: its starts and results, retries and log lines."""
        about = RunEventRow.data["key"].as_string()  # type: ignore[index]
        with self.reading() as s:
            query = select(RunEventRow).where(
                RunEventRow.run_id == run_id,
                RunEventRow.type.in_(("step.updated", "step.retried", "log")),  # type: ignore[attr-defined]
                about == key,
            )
            return list(s.exec(query.order_by(RunEventRow.seq).limit(STEP_EVENTS_MAX)))

    def typical_duration(self, sop_id: str, step_id: str, runs: int = 50) -> float | None:
        """Median milliseconds of the step's completed instances over the SOP's latest `runs` completed runs
        (every version); None when it never completed."""
        with self.reading() as s:
            recent = select(RunRow.id).where(RunRow.sop_id == sop_id, RunRow.status == "completed")
            recent = recent.order_by(RunRow.created_at.desc()).limit(runs)
            query = select(StepRunRow.started_at, StepRunRow.finished_at).where(
                StepRunRow.run_id.in_(recent),  # type: ignore[attr-defined]
                StepRunRow.step_id == step_id,
                StepRunRow.status == "completed",
            )
            rows = s.exec(query.limit(TYPICAL_ROWS_MAX)).all()
        spans = [(finished - started).total_seconds() * 1000 for started, finished in rows if started and finished]
        return round(statistics.median(spans), 1) if spans else None

    def checkpoint(self, run_id: str) -> CheckpointRow | None:
        with self.reading() as s:
            return s.get(CheckpointRow, run_id)

    def runs_ended_before(self, cutoff: Any) -> list[str]:
        with self.reading() as s:
            query = select(RunRow.id).where(
                RunRow.status.in_(("completed", "failed", "cancelled")),  # type: ignore[attr-defined]
                RunRow.finished_at != None,  # noqa: E711
                RunRow.finished_at < cutoff,
            )
            return list(s.exec(query))

    def drop_checkpoints(self, run_ids: list[str]) -> None:
        with self.session() as s, s.begin():
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                s.execute(delete(CheckpointRow).where(CheckpointRow.run_id.in_(chunk)))  # type: ignore[attr-defined]

    def runs_with_status(self, status: str, batch_id: str | None = None) -> list[RunRow]:
        with self.reading() as s:
            query = select(RunRow).where(RunRow.status == status)
            if batch_id is not None:
                query = query.where(RunRow.batch_id == batch_id)
            return list(s.exec(query))


def _new_run(document: SopDocumentRow, inputs: dict[str, Any], status: str, priority: int, **extra: Any) -> RunRow:
    return new_run_row(document.id, document.sop_id, document.version, inputs, status, priority, **extra)  # type: ignore[arg-type]


def new_run_row(
    document_id: int, sop_id: str, version: int, inputs: dict[str, Any], status: str, priority: int, **extra: Any
) -> RunRow:
    """A run's row as it is first written (by a single run or a batch's), its id new."""
    return RunRow(
        id=uuid.uuid4().hex,
        document_id=document_id,
        sop_id=sop_id,
        sop_version=version,
        status=status,
        priority=priority,
        inputs=inputs,
        created_at=utcnow(),
        **extra,
    )
