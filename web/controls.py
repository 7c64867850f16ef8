"""Run and step controls: what each does in each state, and why it is refused (409) when it does not fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sop_engine.actions.human import check_form_values
from sop_engine.document import LoadedSop
from sop_engine.graph import build_graph
from sop_engine.loops import is_inside, parse_key
from sop_engine.states import RUN_TERMINAL, RunStatus
from sop_engine.steps import Input, Step
from sop_engine.store import Store

from .live import LiveFeed
from .workers import WorkerPool


class Refused(Exception):
    """A control that does not fit the run's or step's state: 409, and nothing changed."""


class NotFound(Exception):
    """404."""


@dataclass
class Controls:
    store: Store
    pool: WorkerPool
    feed: LiveFeed

    async def _audit(self, run_id: str, who: str, action: str, target: str | None = None, **values: Any) -> None:
        """Every control goes to the run's audit trail and its event log, in one transaction."""
        data = {"control": action, "who": who, "target": target, **values.pop("data", {})}
        event = self.store.record(
            run_id, "control", data, audit={"who": who, "action": action, "target": target, "detail": data}, **values
        )
        await self.feed.emit(event)

    def _run(self, run_id: str) -> Any:
        run = self.store.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def _step_row(self, run_id: str, key: str) -> Any:
        row = next((r for r in self.store.steps(run_id) if r.key == key), None)
        if row is None:
            raise NotFound(f"run {run_id} has no step {key}")
        return row

    def _requeue(self) -> dict[str, Any]:
        self.pool.wake()
        return {"status": RunStatus.QUEUED.value, "worker": None, "finished_at": None, "error": None}

    # run controls ----------------------------------------------------------------------------

    async def pause(self, run_id: str, who: str) -> None:
        run = self._run(run_id)
        live = self.pool.live.get(run_id)
        if run.status != RunStatus.RUNNING or live is None:
            raise Refused(f"the run is {run.status}; only a running run can be paused")
        if live.control.waiting is not None:
            raise Refused("the run is already paused")
        live.control.pause_requested = True
        await self._audit(run_id, who, "pause")

    async def resume(self, run_id: str, who: str, action: str = "resume") -> None:
        run = self._run(run_id)
        if run.status != RunStatus.PAUSED:
            raise Refused(f"the run is {run.status}; only a paused run can be resumed or stepped")
        live = self.pool.live.get(run_id)
        if live is None:  # paused before a restart: it goes back in the queue and picks up where it was
            await self._audit(run_id, who, action, run=self._requeue())
            return
        waiting = live.control.waiting
        if waiting is not None and waiting.kind == "failed":
            raise Refused(f"step {waiting.key} failed: retry it or skip it")
        if waiting is not None and waiting.kind in ("input", "approval"):
            raise Refused(f"step {waiting.key} waits for a person's answer: submit its form")
        await self._audit(run_id, who, action)
        if action == "step" and waiting is None:
            live.control.stepping = True
        live.control.answer(action)

    async def cancel(self, run_id: str, who: str) -> None:
        run = self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status} already")
        await self._audit(run_id, who, "cancel")
        if not await self.pool.cancel(run_id):
            self.store.record(
                run_id,
                "run.updated",
                {"status": "cancelled", "error": "cancelled"},
                run={"status": "cancelled", "error": "cancelled"},
            )

    # step controls ---------------------------------------------------------------------------

    async def skip(self, run_id: str, key: str, who: str) -> None:
        run = self._run(run_id)
        row = self._step_row(run_id, key)
        live = self.pool.live.get(run_id)
        waiting = live.control.waiting if live else None
        if row.status == "failed" and waiting is not None and waiting.kind == "failed" and waiting.key == key:
            await self._audit(run_id, who, "skip", key)
            live.control.answer("skip")  # type: ignore[union-attr]
        elif row.status == "failed" and run.status in RUN_TERMINAL | {RunStatus.PAUSED}:
            await self._audit(
                run_id,
                who,
                "skip",
                key,
                step=(key, {"status": "skipped", "reason": f"skipped by {who} after it failed"}),
                run=self._requeue(),
            )
        elif row.status == "pending" and run.status not in RUN_TERMINAL:
            if live is not None:
                live.control.skips.add(key)
                await self._audit(run_id, who, "skip", key)
                if waiting is not None and waiting.key == key and waiting.kind in ("pause", "breakpoint"):
                    live.control.answer("step")  # skip it now, and stay paused before the next step
            else:
                await self._audit(
                    run_id, who, "skip", key, step=(key, {"status": "skipped", "reason": f"skipped by {who}"})
                )
        else:
            raise Refused(
                f"step {key} is {row.status} in a {run.status} run; only a pending step, or a failed "
                "one, can be skipped"
            )

    async def retry(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        self._run(run_id)
        row = self._step_row(run_id, key)
        if row.status != "failed":
            raise Refused(f"step {key} is {row.status}; only a failed step can be retried")
        live = self.pool.live.get(run_id)
        waiting = live.control.waiting if live else None
        if waiting is not None and waiting.kind == "failed" and waiting.key == key:
            await self._audit(run_id, who, "retry", key)
            live.control.answer("retry")  # type: ignore[union-attr]
            return
        if live is not None:
            raise Refused("the run is still going; retry the step once the run has ended or paused")
        keys = [key, *self._blocked_by(run_id)] + self._containers(run_id, key)
        await self._audit(run_id, who, "retry", key, reset=(keys, f"retried by {who}"), run=self._requeue())

    async def rerun(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        run = self._run(run_id)
        row = self._step_row(run_id, key)
        if row.status != "completed":
            raise Refused(f"step {key} is {row.status}; only a completed step can be rerun")
        if run.status not in RUN_TERMINAL | {RunStatus.PAUSED} or run.status == RunStatus.CANCELLED:
            raise Refused(f"the run is {run.status}; rerun a step of a completed, failed or paused run")
        live = self.pool.live.get(run_id)
        if live is not None:  # paused in this process: stop it here, it resumes from the database
            live.control.stopping = True
            await self.pool.cancel(run_id)
        keys = self.rerun_keys(run_id, key, loaded)
        await self._audit(
            run_id, who, "rerun", key, reset=(keys, f"rerun by {who}"), run=self._requeue(), data={"reset": keys}
        )

    async def breakpoint(self, run_id: str, key: str, on: bool, who: str, loaded: LoadedSop) -> None:
        run = self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status}; breakpoints are for runs still to go")
        step_id = parse_key(key)[-1][0] if _valid_key(key) else None
        if step_id not in {s.id for s in loaded.sop.walk()}:
            raise NotFound(f"the SOP has no step {key}")
        points = set(run.breakpoints or [])
        points = points | {key} if on else points - {key}
        live = self.pool.live.get(run_id)
        if live is not None:
            live.control.breakpoints = set(points)
        await self._audit(run_id, who, "breakpoint", key, run={"breakpoints": sorted(points)}, data={"on": on})

    async def submit(self, run_id: str, key: str, values: dict[str, Any], who: str, loaded: LoadedSop) -> None:
        live = self.pool.live.get(run_id)
        waiting = live.control.waiting if live else None
        if waiting is None or waiting.key != key or waiting.kind not in ("input", "approval"):
            raise Refused(f"step {key} is not waiting for a person's answer")
        step = _find_step(loaded, key)
        if isinstance(step, Input):
            problems = check_form_values(step, values)
            if problems:
                raise ValueError("; ".join(problems))
        elif not isinstance(values.get("approved"), bool):
            raise ValueError("'approved' must be true or false")
        secret = {n for n, f in (waiting.form or {}).get("fields", {}).items() if f.get("secret")}
        await self._audit(run_id, who, "submit", key, data={"fields": sorted(values), "secret": sorted(secret)})
        live.control.answer("submit", values=values)  # type: ignore[union-attr]

    # which rows a retry or rerun resets ------------------------------------------------------

    def _blocked_by(self, run_id: str) -> list[str]:
        return [r.key for r in self.store.steps(run_id) if r.status == "blocked"]

    def _containers(self, run_id: str, key: str) -> list[str]:
        """The loops and branches holding a step: they must run again to reach it."""
        parents = {r.key: r.parent_key for r in self.store.steps(run_id)}
        found, parent = [], parents.get(key)
        while parent:
            found.append(parent)
            parent = parents.get(parent)
        return found

    def rerun_keys(self, run_id: str, key: str, loaded: LoadedSop) -> list[str]:
        """The step, what is inside it, the steps after it that need it (at its level and at each enclosing
        level), and its containers."""
        rows = self.store.steps(run_id)
        parents = {r.key: r.parent_key for r in rows}
        chosen = {key}
        current: str | None = key
        while current is not None:
            siblings = [r for r in rows if parents.get(r.key) == parents.get(current)]
            prefix = current[: len(current) - len(parse_key(current)[-1][0])]
            scope = _scope_steps(loaded, current)
            graph = build_graph(scope)
            for dependant in graph.dependants(parse_key(current)[-1][0]):
                chosen |= {r.key for r in siblings if r.key == prefix + dependant}
            current = parents.get(current)
            if current is not None:
                chosen.add(current)
        for row in rows:
            if any(is_inside(row.key, c) for c in list(chosen)) or row.status == "blocked":
                chosen.add(row.key)
        return sorted(chosen)


def _valid_key(key: str) -> bool:
    try:
        parse_key(key)
    except ValueError:
        return False
    return True


def _find_step(loaded: LoadedSop, key: str) -> Step | None:
    step_id = parse_key(key)[-1][0]
    return next((s for s in loaded.sop.walk() if s.id == step_id), None)


def _scope_steps(loaded: LoadedSop, key: str) -> list[Step]:
    """The sibling list the step of this key stands in."""
    step_id = parse_key(key)[-1][0]

    def search(steps: list[Step]) -> list[Step] | None:
        if any(s.id == step_id for s in steps):
            return steps
        for step in steps:
            for children in step.children():
                found = search(children)
                if found is not None:
                    return found
        return None

    return search(loaded.sop.steps) or []
