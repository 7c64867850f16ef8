"""The one gate of run and step state: a change and its event commit together, or not at all."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, update

from ..events import Event, utcnow
from ..tables import (
    AuditRow,
    CheckpointRow,
    RunEventRow,
    RunRow,
    StepRunRow,
)
from .database import Database


class Journal(Database):
    def record(self, run_id: str, type_: str, data: dict[str, Any], **change: Any) -> Event:
        """Applies a state change and appends its event, numbered next in the run's sequence, atomically.
        `change`: run={columns}, step=(key, {columns}), new_steps=[rows], reset=(keys, reason), audit={...},
        checkpoint={key, tabs, storage}."""
        return self.record_many(run_id, [(type_, data, change)])[0]

    def record_many(self, run_id: str, changes: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[Event]:
        """Several state changes of one run, each with its event numbered in order, in one transaction.
        Merged into as few statements as they allow: one update of the run (its sequence moves by as many
        events), new step rows in one insert, one update per step touched, the events in one insert.
        SQLAlchemy Core statements built once, on one connection: the ORM's bookkeeping, and building the
        statements anew, would cost more than the commit itself."""
        at = utcnow()
        run: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        steps: dict[str, dict[str, Any]] = {}
        checkpoint = None
        for _, _, change in changes:
            run.update(change.get("run") or {})
            rows += [{"run_id": run_id, "attempts": 0, "artifacts": [], **v} for v in change.get("new_steps") or ()]
            if change.get("step"):
                key, values = change["step"]
                steps.setdefault(key, {}).update(values)
            checkpoint = change.get("checkpoint") or checkpoint
        with self._write() as conn:
            last = conn.execute(
                self._statement("run", tuple(sorted(run))),
                {"rid": run_id, "n": len(changes), **{f"v_{k}": v for k, v in run.items()}},
            ).scalar_one()
            if rows:
                conn.execute(insert(StepRunRow.__table__), rows)  # type: ignore[attr-defined]
            for key, values in steps.items():
                conn.execute(
                    self._statement("step", tuple(sorted(values))),
                    {"rid": run_id, "k": key, **{f"v_{k}": v for k, v in values.items()}},
                )
            for _, _, change in changes:
                if change.get("reset"):
                    self._reset(conn, run_id, *change["reset"])
                if change.get("audit"):
                    audit = {"run_id": run_id, "at": at, **change["audit"]}
                    conn.execute(insert(AuditRow.__table__), [audit])  # type: ignore[attr-defined]
            if checkpoint:
                self._save_checkpoint(conn, run_id, at, checkpoint)
            first = last - len(changes) + 1
            events = [Event(run_id, first + i, type_, data, at) for i, (type_, data, _) in enumerate(changes)]
            conn.execute(
                self._statement("event", ()),
                [{"run_id": run_id, "seq": e.seq, "type": e.type, "data": e.data, "at": at} for e in events],
            )
        return events

    def _statement(self, kind: str, keys: tuple[str, ...]) -> Any:
        """Statements of the hot path, built once per shape and reused (bound parameters v_<column>)."""
        found = self._statements.get((kind, keys))
        if found is None:
            runs, steps = RunRow.__table__, StepRunRow.__table__  # type: ignore[attr-defined]
            if kind == "run":
                found = (
                    update(runs)
                    .where(runs.c.id == bindparam("rid"))
                    .values(last_seq=runs.c.last_seq + bindparam("n"), **{k: bindparam(f"v_{k}") for k in keys})
                    .returning(runs.c.last_seq)
                )
            elif kind == "step":
                found = (
                    update(steps)
                    .where(steps.c.run_id == bindparam("rid"), steps.c.key == bindparam("k"))
                    .values(**{k: bindparam(f"v_{k}") for k in keys})
                )
            else:
                found = insert(RunEventRow.__table__)  # type: ignore[attr-defined]
            self._statements[(kind, keys)] = found
        return found

    @staticmethod
    def _reset(conn: Any, run_id: str, keys: list[str], reason: str | None) -> None:
        steps = StepRunRow.__table__  # type: ignore[attr-defined]
        conn.execute(
            update(steps)
            .where(steps.c.run_id == run_id, steps.c.key.in_(keys))
            .values(status="pending", reason=reason, error=None, outputs=None, sealed_outputs=None, finished_at=None)
        )

    @staticmethod
    def _save_checkpoint(conn: Any, run_id: str, at: Any, checkpoint: dict[str, Any]) -> None:
        table = CheckpointRow.__table__  # type: ignore[attr-defined]
        values = {"key": checkpoint["key"], "at": at, "tabs": checkpoint["tabs"]}
        if "storage" in checkpoint:  # taken less often than the URLs: keep the last one when not retaken
            values["storage"] = checkpoint["storage"]
        done = conn.execute(update(table).where(table.c.run_id == run_id).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(table), [{"run_id": run_id, **values}])
