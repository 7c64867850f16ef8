"""Searching runs by filters (status, SOP, error kind, batch, when they ended), the failed step of each failed
run, deleting ended runs with their rows, and the server-level audit log (sop_engine.dead_letters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert
from sqlmodel import select

from ..dead_letters import OTHER, RunFilter
from ..errors import ErrorKind
from ..events import utcnow
from ..states import RUN_TERMINAL
from ..tables import AuditRow, CheckpointRow, RunEventRow, RunRow, ServerAuditRow, StepRunRow
from .database import Database

ENDED = tuple(s.value for s in RUN_TERMINAL)
CHILDREN = (StepRunRow, RunEventRow, AuditRow, CheckpointRow)  # the rows of a run, deleted with it


def _failed_of_kind(kinds: tuple[str, ...]) -> Any:
    """A failed step of the run whose error is of one of these kinds."""
    kind = StepRunRow.error["kind"].as_string()  # type: ignore[index]
    return exists().where(
        StepRunRow.run_id == RunRow.id,
        StepRunRow.status == "failed",
        kind.in_(kinds),
    )


def _filtered(query: Any, wanted: RunFilter) -> Any:
    equal = (
        (RunRow.status, wanted.status),
        (RunRow.sop_id, wanted.sop_id),
        (RunRow.created_by, wanted.created_by),
        (RunRow.batch_id, wanted.batch_id),
    )
    for column, value in equal:
        if value is not None:
            query = query.where(column == value)
    if wanted.since is not None:
        query = query.where(RunRow.finished_at >= wanted.since)  # type: ignore[operator]
    if wanted.until is not None:
        query = query.where(RunRow.finished_at <= wanted.until)  # type: ignore[operator]
    if wanted.error_kind == OTHER:
        query = query.where(~_failed_of_kind(tuple(k.value for k in ErrorKind)))
    elif wanted.error_kind is not None:
        query = query.where(_failed_of_kind((wanted.error_kind,)))
    return query


class DeadLetters(Database):
    def find_runs(self, wanted: RunFilter, limit: int = 50, offset: int = 0) -> tuple[list[RunRow], int]:
        """Runs that fit the filter, newest first, and how many fit."""
        with self.reading() as s:
            query = _filtered(select(RunRow), wanted).order_by(RunRow.created_at.desc())  # type: ignore[attr-defined]
            rows = s.exec(query.offset(offset).limit(limit))
            total = s.exec(_filtered(select(func.count()).select_from(RunRow), wanted)).one()
            return list(rows), total

    def run_summaries(self, wanted: RunFilter, cap: int) -> list[tuple[str, str, str | None, Any, str | None]]:
        """(id, sop id, error, finished at, created by) of at most `cap` runs that fit, the latest ended first."""
        columns = select(RunRow.id, RunRow.sop_id, RunRow.error, RunRow.finished_at, RunRow.created_by)
        order = (RunRow.finished_at.desc(), RunRow.id)  # type: ignore[union-attr]
        with self.reading() as s:
            return [tuple(row) for row in s.exec(_filtered(columns, wanted).order_by(*order).limit(cap))]  # type: ignore[misc]

    def failed_steps(self, run_ids: list[str]) -> dict[str, tuple[str, dict[str, Any] | None]]:
        """(key, error) of the step that failed each run: its failed step that ended last."""
        found: dict[str, tuple[str, dict[str, Any] | None]] = {}
        with self.reading() as s:
            for start in range(0, len(run_ids), 500):
                query = select(StepRunRow.run_id, StepRunRow.key, StepRunRow.error).where(
                    StepRunRow.run_id.in_(run_ids[start : start + 500]),  # type: ignore[attr-defined]
                    StepRunRow.status == "failed",
                )
                for run_id, key, error in s.exec(query.order_by(StepRunRow.finished_at, StepRunRow.id)):
                    found[run_id] = (key, error)  # the later one wins
        return found

    def runs_by_id(self, run_ids: list[str]) -> list[RunRow]:
        with self.reading() as s:
            return list(s.exec(select(RunRow).where(RunRow.id.in_(run_ids))))  # type: ignore[attr-defined]

    def delete_ended_run(self, run_id: str, audit: dict[str, Any]) -> str | None:
        """Deletes an ended run with its steps, events, audit trail and checkpoint, and writes `audit` to the
        server-level log, in one transaction; the run's row is locked first (PostgreSQL), so a control cannot
        queue it meanwhile. Returns why not when it refuses (None: deleted). Its files are the caller's."""
        with self.session() as s, s.begin():
            run = s.exec(select(RunRow).where(RunRow.id == run_id).with_for_update()).first()
            if run is None:
                return "no such run"
            if run.status not in ENDED:
                return f"the run is {run.status}: only a run that ended may be deleted"
            for table in CHILDREN:
                s.execute(delete(table).where(table.run_id == run_id))  # type: ignore[attr-defined]
            s.execute(delete(RunRow).where(RunRow.id == run_id))  # type: ignore[arg-type]
            s.execute(insert(ServerAuditRow), [self._line(run_id, run.sop_id, audit)])
        return None

    def write_audit(self, lines: list[dict[str, Any]]) -> None:
        """Lines of the server-level log: {who, action, run_id, sop_id, target, outcome, detail}."""
        if lines:
            with self.session() as s, s.begin():
                s.execute(insert(ServerAuditRow), [self._line(**line) for line in lines])

    @staticmethod
    def _line(run_id: str | None, sop_id: str | None, audit: dict[str, Any] | None = None, **more: Any) -> dict:
        return {"at": utcnow(), "run_id": run_id, "sop_id": sop_id, "outcome": "done", **(audit or {}), **more}

    def server_audit(
        self,
        limit: int = 100,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        **equal: str | None,
    ) -> tuple[list[ServerAuditRow], int]:
        """The server-level log, newest first: lines whose columns equal the given values (who, action, run_id,
        sop_id, outcome) and whose time lies in [since, until]."""
        conditions = [getattr(ServerAuditRow, name) == value for name, value in equal.items() if value is not None]
        if since is not None:
            conditions.append(ServerAuditRow.at >= since)  # type: ignore[arg-type]
        if until is not None:
            conditions.append(ServerAuditRow.at <= until)  # type: ignore[arg-type]
        with self.reading() as s:
            query = select(ServerAuditRow).where(*conditions).order_by(ServerAuditRow.id.desc())  # type: ignore[union-attr]
            rows = s.exec(query.offset(offset).limit(limit)).all()
            total = s.exec(select(func.count()).select_from(ServerAuditRow).where(*conditions)).one()
            return list(rows), total
