"""The one gate of run and step state: every status change, from any process, is proposed here. The gate
checks it against the table (sop_engine.states) and applies it as a conditional update, `UPDATE … WHERE
status IN (the statuses it may come from)`, with its event in the same transaction; a change that the table
forbids, or that lost a race with another writer, changes nothing and raises TransitionError saying why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from ..events import Event, utcnow
from ..states import (
    ClaimLost,
    RunStatus,
    StepStatus,
    TransitionError,
    check_runs,
    check_steps,
    run_sources,
    step_sources,
)
from ..tables import AuditRow, CheckpointRow, RunEventRow, RunRow, ServerAuditRow, StepRunRow
from .database import Database
from .prepared import Prepared
from .webhooks import notify_run

Change = tuple[str, dict[str, Any], dict[str, Any]]  # event type, event data, state change
RUNS, STEPS = RunRow.__table__, StepRunRow.__table__  # type: ignore[attr-defined]
SERVER_AUDIT = ServerAuditRow.__table__  # type: ignore[attr-defined]
EVENT_COLUMNS = ("run_id", "seq", "type", "data", "at")


class Journal(Database):
    def record(self, run_id: str, type_: str, data: dict[str, Any], holder: str | None = None, **change: Any) -> Event:
        """Applies a state change and appends its event, numbered next in the run's sequence, atomically.
        `change`: run={columns}, step=(key, {columns}), new_steps=[rows], reset=(keys, reason), audit={...},
        checkpoint={key, tabs, storage}, costs={step key: figures} (sop_engine.cost; no status moves). `holder`:
        the change is made only while this worker holds the run (ClaimLost otherwise)."""
        return self.record_many(run_id, [(type_, data, change)], holder)[0]

    def record_many(self, run_id: str, changes: list[Change], holder: str | None = None) -> list[Event]:
        """Several state changes of one run, each with its event numbered in order, in one transaction."""
        with self._write() as conn:
            return self._apply(conn, run_id, changes, holder)

    def _apply(self, conn: Any, run_id: str, changes: list[Change], holder: str | None) -> list[Event]:
        """Merged into as few statements as the changes allow: one update of the run (its sequence moves by
        as many events), new step rows in one insert, one update per step touched, the events in one insert.
        The hot statements are compiled once and run on the driver's cursor (store.prepared): the ORM's
        bookkeeping, or even Core's execution, would cost more than the commit itself."""
        at = utcnow()
        merged = _Merged.of(run_id, changes)
        first_move = merged.run_moves[0] if merged.run_moves else None
        last = self._update_run(conn, run_id, merged.run, len(changes), first_move, holder)
        for shape, rows in _shapes(merged.rows).items():
            self._statement("steps", shape).many(conn, rows)
        for key, values in merged.steps.items():
            moves = merged.step_moves.get(key)
            sources = _sources(step_sources(moves[0])) if moves else None
            changed, _ = self._statement("step", tuple(sorted(values)), sources).run(
                conn, {"rid": run_id, "k": key, **_bound(values)}
            )
            if moves and changed == 0:
                raise self._step_refused(conn, run_id, key, moves[0])
        if merged.costs:  # steps' figures completed after they ended: the steps are where they are
            costs = [{"rid": run_id, "k": key, "v_cost": cost} for key, cost in merged.costs.items()]
            self._statement("step", ("cost",)).many(conn, costs)
        for _, _, change in changes:
            if change.get("reset"):
                self._reset(conn, run_id, *change["reset"])
            if change.get("audit"):
                conn.execute(insert(AuditRow.__table__), [{"run_id": run_id, "at": at, **change["audit"]}])  # type: ignore[attr-defined]
                self._server_audit(conn, run_id, at, change["audit"])
        if merged.checkpoint:
            self._save_checkpoint(conn, run_id, at, merged.checkpoint)
        if merged.run_moves:  # webhooks' outbox, in this transaction: a crash cannot lose a notification
            notify_run(conn, run_id, merged.run_moves[-1], at)
        first = last - len(changes) + 1
        events = [Event(run_id, first + i, type_, data, at) for i, (type_, data, _) in enumerate(changes)]
        if merged.run_moves and merged.run_moves[-1] == RunStatus.CANCELLED:
            events += self._cancel_steps(conn, run_id, last, at)
        self._statement("events", EVENT_COLUMNS).many(
            conn, [{"run_id": run_id, "seq": e.seq, "type": e.type, "data": e.data, "at": at} for e in events]
        )
        return events

    def _update_run(
        self, conn: Any, run_id: str, run: dict[str, Any], n: int, move: RunStatus | None, holder: str | None
    ) -> int:
        """Moves the run's sequence on by `n` (and sets its columns), if it may: returns the last number."""
        sources = _sources(run_sources(move)) if move else None
        statement = self._statement("run", tuple(sorted(run)), sources, holder is not None)
        bound = {"rid": run_id, "n": n, **_bound(run)}
        if holder is not None:
            bound["holder"] = holder
        _, last = statement.run(conn, bound)
        if last is not None:
            return int(last[0])
        found = conn.execute(select(RUNS.c.status, RUNS.c.worker).where(RUNS.c.id == run_id)).first()
        if found is None:
            raise TransitionError(f"there is no run {run_id}")
        if holder is not None and found.worker != holder:
            held = f", held by {found.worker}" if found.worker else ""
            raise ClaimLost(f"run {run_id} is no longer held by {holder}: it is {found.status}{held}")
        raise TransitionError(f"the run is {found.status}; a {found.status} run cannot become {move}")

    @staticmethod
    def _step_refused(conn: Any, run_id: str, key: str, move: StepStatus) -> TransitionError:
        found = conn.execute(
            select(STEPS.c.status).where(STEPS.c.run_id == run_id, STEPS.c.key == key)
        ).scalar_one_or_none()
        if found is None:
            return TransitionError(f"run {run_id} has no step {key}")
        return TransitionError(f"step {key} is {found}; a {found} step cannot become {move}")

    def _cancel_steps(self, conn: Any, run_id: str, last: int, at: Any) -> list[Event]:
        """A cancelled run's steps still in flight (perhaps in another process, which learns of the cancel at
        its next write) end `cancelled`, each with its event."""
        keys = list(
            conn.execute(
                update(STEPS)
                .where(STEPS.c.run_id == run_id, STEPS.c.status == StepStatus.RUNNING.value)
                .values(status=StepStatus.CANCELLED.value, finished_at=at, reason="the run was cancelled")
                .returning(STEPS.c.key)
            ).scalars()
        )
        if not keys:
            return []
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(last_seq=RUNS.c.last_seq + len(keys)))
        data = [{"key": key, "status": StepStatus.CANCELLED.value, "reason": "the run was cancelled"} for key in keys]
        return [Event(run_id, last + 1 + i, "step.updated", d, at) for i, d in enumerate(data)]

    def _statement(
        self, kind: str, keys: tuple[str, ...], sources: tuple[str, ...] | None = None, fenced: bool = False
    ) -> Prepared:
        """Statements of the hot path, built and compiled once per shape (store.prepared): bound parameters
        v_<column>; `sources`, the statuses a change may come from (written into the statement); `fenced`, the
        worker that must hold the run in `holder`."""
        shape = (kind, keys, sources, fenced)
        found = self._statements.get(shape)
        if found is None:
            statement: Any
            if kind == "run":
                statement = update(RUNS).where(RUNS.c.id == bindparam("rid"))
                if sources is not None:
                    statement = statement.where(RUNS.c.status.in_(_fixed(sources)))
                if fenced:
                    statement = statement.where(RUNS.c.worker == bindparam("holder"))
                values = {k: bindparam(f"v_{k}") for k in keys}
                statement = statement.values(last_seq=RUNS.c.last_seq + bindparam("n"), **values)
                statement = statement.returning(RUNS.c.last_seq)
            elif kind == "step":
                statement = update(STEPS).where(STEPS.c.run_id == bindparam("rid"), STEPS.c.key == bindparam("k"))
                if sources is not None:
                    statement = statement.where(STEPS.c.status.in_(_fixed(sources)))
                statement = statement.values(**{k: bindparam(f"v_{k}") for k in keys})
            else:  # new rows: of steps, or events
                table = STEPS if kind == "steps" else RunEventRow.__table__  # type: ignore[attr-defined]
                statement = insert(table).values({k: bindparam(k) for k in keys})
            found = self._statements[shape] = Prepared(statement, self.engine.dialect)
        return found

    @staticmethod
    def _reset(conn: Any, run_id: str, keys: list[str], reason: str | None) -> None:
        """Steps a person runs again go back to pending: those the table lets go back (not a cancelled one)."""
        allowed = [s.value for s in step_sources(StepStatus.PENDING) | {StepStatus.PENDING}]
        conn.execute(
            update(STEPS)
            .where(STEPS.c.run_id == run_id, STEPS.c.key.in_(keys), STEPS.c.status.in_(allowed))
            .values(status="pending", reason=reason, error=None, outputs=None, sealed_outputs=None, finished_at=None)
        )

    @staticmethod
    def _server_audit(conn: Any, run_id: str, at: Any, audit: dict[str, Any]) -> None:
        """A control goes to the server-level audit log too (store.audit), in the same transaction."""
        sop_id = conn.execute(select(RUNS.c.sop_id).where(RUNS.c.id == run_id)).scalar_one_or_none()
        conn.execute(insert(SERVER_AUDIT), [{"run_id": run_id, "sop_id": sop_id, "at": at, "outcome": "done", **audit}])

    @staticmethod
    def _save_checkpoint(conn: Any, run_id: str, at: Any, checkpoint: dict[str, Any]) -> None:
        table = CheckpointRow.__table__  # type: ignore[attr-defined]
        values = {"key": checkpoint["key"], "at": at, "tabs": checkpoint["tabs"]}
        if "storage" in checkpoint:  # taken less often than the URLs: keep the last one when not retaken
            values["storage"] = checkpoint["storage"]
        done = conn.execute(update(table).where(table.c.run_id == run_id).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(table), [{"run_id": run_id, **values}])


@dataclass
class _Merged:
    """The changes of one transaction, merged: the run's columns, new step rows, each step's columns, and
    the status moves of the run and of each step, in order (checked against the table as a chain)."""

    run: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_moves: list[RunStatus] = field(default_factory=list)
    step_moves: dict[str, list[StepStatus]] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, run_id: str, changes: list[Change]) -> _Merged:
        merged = cls()
        for _, _, change in changes:
            if change.get("run"):
                merged.run.update(change["run"])
                if "status" in change["run"]:
                    merged.run_moves.append(RunStatus(change["run"]["status"]))
            for values in change.get("new_steps") or ():
                merged.rows.append({"run_id": run_id, "attempts": 0, "artifacts": [], **values})
            if change.get("step"):
                key, values = change["step"]
                merged.steps.setdefault(key, {}).update(values)
                if "status" in values:
                    merged.step_moves.setdefault(key, []).append(StepStatus(values["status"]))
            merged.checkpoint = change.get("checkpoint") or merged.checkpoint
            merged.costs.update(change.get("costs") or {})
        check_runs(merged.run_moves)
        for moves in merged.step_moves.values():
            check_steps(moves)
        return merged


def _bound(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{k}": v for k, v in values.items()}


def _sources(statuses: frozenset[Any]) -> tuple[str, ...]:
    return tuple(sorted(s.value for s in statuses))


def _fixed(statuses: tuple[str, ...]) -> list[Any]:
    """Statuses as parameters whose values the statement keeps (no list expanded at each execution)."""
    return [bindparam(f"source_{i}", status) for i, status in enumerate(statuses)]


def _shapes(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by the columns they set: one insert statement each."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    return shapes
