"""Run and step controls: what each does in each state, and why it is refused (409) when it does not fit.

A control on a run a worker of this server is executing answers it (through its RunControl). A control
that changes what is already recorded (retry after the run ended, rerun, a decision on a run paused before
a restart) takes the run back from its worker if needed, resets the step rows, and queues the run again:
the next execution picks up from the database."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sop_engine.actions.human import check_form_values
from sop_engine.document import LoadedSop
from sop_engine.graph import build_graph, sibling_lists
from sop_engine.loops import parse_key
from sop_engine.states import RUN_TERMINAL, RunStatus
from sop_engine.steps import Input

from .errors import Invalid, NotFound, Refused
from .workers import LiveRun, WorkerPool


def _serialised(control: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A control runs under the pool's claim lock: a run claimed at this moment is live before it looks."""

    @functools.wraps(control)
    async def serialised(self: Controls, *args: Any, **kwargs: Any) -> None:
        async with self.pool.claiming:
            await control(self, *args, **kwargs)

    return serialised


@dataclass
class Controls:
    store: Any  # web.db.AsyncStore: every call awaited, in a thread
    pool: WorkerPool

    async def _audit(self, run_id: str, who: str, action: str, target: str | None = None, **values: Any) -> None:
        """Every control goes to the run's audit trail and its event log, in one transaction."""
        data = {"control": action, "who": who, "target": target, **values.pop("data", {})}
        audit = {"who": who, "action": action, "target": target, "detail": data}
        await self.pool.record(run_id, "control", data, audit=audit, **values)

    async def _run(self, run_id: str) -> Any:
        run = await self.store.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    async def _step_row(self, run_id: str, key: str) -> Any:
        row = next((r for r in await self.store.steps(run_id) if r.key == key), None)
        if row is None:
            raise NotFound(f"run {run_id} has no step {key}")
        return row

    def _requeue(self) -> dict[str, Any]:
        return {"status": RunStatus.QUEUED.value, "worker": None, "finished_at": None, "error": None, "waiting": None}

    @staticmethod
    def _answer(live: LiveRun, action: str, **data: Any) -> None:
        if not live.control.answer(action, **data):
            raise Refused("the run is no longer waiting for an answer")

    def _waiting(self, run_id: str) -> tuple[LiveRun | None, Any]:
        live = self.pool.live.get(run_id)
        return live, (live.control.waiting if live else None)

    # run controls ----------------------------------------------------------------------------

    @_serialised
    async def pause(self, run_id: str, who: str) -> None:
        run = await self._run(run_id)
        live, waiting = self._waiting(run_id)
        if run.status != RunStatus.RUNNING or live is None:
            raise Refused(f"the run is {run.status}; only a running run can be paused")
        if waiting is not None:
            raise Refused("the run is already paused")
        live.control.pause_requested = True
        await self._audit(run_id, who, "pause")

    @_serialised
    async def resume(self, run_id: str, who: str, action: str = "resume") -> None:
        run = await self._run(run_id)
        if run.status != RunStatus.PAUSED:
            raise Refused(f"the run is {run.status}; only a paused run can be resumed or stepped")
        live, waiting = self._waiting(run_id)
        if run.waiting and run.waiting.get("kind") == "failed" or waiting is not None and waiting.kind == "failed":
            key = waiting.key if waiting else run.waiting["key"]
            raise Refused(f"step {key} failed: retry it or skip it")
        if waiting is not None and waiting.kind in ("input", "approval"):
            raise Refused(f"step {waiting.key} waits for a person's answer: submit its form")
        if live is None:  # paused before a restart: back to the queue, to pick up where it was
            self.pool.wake()
            await self._audit(run_id, who, action, run=self._requeue())
            return
        self._answer(live, action)
        await self._audit(run_id, who, action)

    @_serialised
    async def cancel(self, run_id: str, who: str) -> None:
        run = await self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status} already")
        await self._audit(run_id, who, "cancel")
        if not await self.pool.cancel(run_id):
            await self.pool.record(
                run_id,
                "run.updated",
                {"status": "cancelled", "error": "cancelled"},
                run={"status": "cancelled", "error": "cancelled", "worker": None},
            )

    # step controls ---------------------------------------------------------------------------

    @_serialised
    async def skip(self, run_id: str, key: str, who: str) -> None:
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        live, waiting = self._waiting(run_id)
        if run.status == RunStatus.CANCELLED:
            raise Refused("the run was cancelled")
        if row.status == "failed" and waiting is not None and waiting.kind == "failed" and waiting.key == key:
            self._answer(live, "skip")  # type: ignore[arg-type]
            await self._audit(run_id, who, "skip", key)
        elif (
            row.status == "failed"
            and live is None
            and run.status in (RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.PAUSED)
        ):
            self.pool.wake()
            reason = f"skipped by {who} after it failed"
            await self._audit(
                run_id, who, "skip", key, step=(key, {"status": "skipped", "reason": reason}), run=self._requeue()
            )
        elif row.status == "pending" and run.status not in RUN_TERMINAL:
            if live is not None:
                live.control.skips.add(key)
                await self._audit(run_id, who, "skip", key)
                if waiting is not None and waiting.key == key and waiting.kind in ("pause", "breakpoint"):
                    self._answer(live, "step")  # skip it now, and stay paused before the next step
            else:
                await self._audit(
                    run_id, who, "skip", key, step=(key, {"status": "skipped", "reason": f"skipped by {who}"})
                )
        else:
            raise Refused(
                f"step {key} is {row.status} in a {run.status} run; only a pending step, or a failed "
                "one of a run that ended or waits on it, can be skipped"
            )

    @_serialised
    async def retry(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        if row.status != "failed":
            raise Refused(f"step {key} is {row.status}; only a failed step can be retried")
        live, waiting = self._waiting(run_id)
        if waiting is not None and waiting.kind == "failed" and waiting.key == key:
            self._answer(live, "retry")  # type: ignore[arg-type]
            await self._audit(run_id, who, "retry", key)
            return
        if live is not None or run.status not in (RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.PAUSED):
            raise Refused(f"the run is {run.status}; retry a step of a run that ended, or that waits on that step")
        keys = [key, *await self._blocked(run_id), *await self._containers(run_id, key)]
        self.pool.wake()
        await self._audit(run_id, who, "retry", key, reset=(keys, f"retried by {who}"), run=self._requeue())

    @_serialised
    async def rerun(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        if row.status != "completed":
            raise Refused(f"step {key} is {row.status}; only a completed step can be rerun")
        if run.status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.PAUSED):
            raise Refused(f"the run is {run.status}; rerun a step of a completed, failed or paused run")
        await self.pool.cancel(run_id, hand_back=True)  # paused in this process: its worker lets go first
        keys = await self.rerun_keys(run_id, key, loaded)
        self.pool.wake()
        await self._audit(
            run_id, who, "rerun", key, reset=(keys, f"rerun by {who}"), run=self._requeue(), data={"reset": keys}
        )

    @_serialised
    async def breakpoint(self, run_id: str, key: str, on: bool, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status}; breakpoints are for runs still to go")
        if _step_id(key) not in {s.id for s in loaded.sop.walk()}:
            raise NotFound(f"the SOP has no step {key}")
        points = set(run.breakpoints or [])
        points = points | {key} if on else points - {key}
        live = self.pool.live.get(run_id)
        if live is not None:
            live.control.breakpoints = set(points)
        await self._audit(run_id, who, "breakpoint", key, run={"breakpoints": sorted(points)}, data={"on": on})

    @_serialised
    async def submit(self, run_id: str, key: str, values: dict[str, Any], who: str, loaded: LoadedSop) -> None:
        live, waiting = self._waiting(run_id)
        if waiting is None or waiting.key != key or waiting.kind not in ("input", "approval"):
            raise Refused(f"step {key} is not waiting for a person's answer")
        step = next((s for s in loaded.sop.walk() if s.id == _step_id(key)), None)
        if isinstance(step, Input):
            problems = check_form_values(step, values)
            if problems:
                raise Invalid("; ".join(problems))
        elif not isinstance(values.get("approved"), bool):
            raise Invalid("'approved' must be true or false")
        secret = sorted(n for n, f in (waiting.form or {}).get("fields", {}).items() if f.get("secret"))
        self._answer(live, "submit", values=values)  # type: ignore[arg-type]
        await self._audit(run_id, who, "submit", key, data={"fields": sorted(values), "secret": secret})

    # which rows a retry or rerun resets ------------------------------------------------------

    async def _blocked(self, run_id: str) -> list[str]:
        return [r.key for r in await self.store.steps(run_id) if r.status == "blocked"]

    async def _containers(self, run_id: str, key: str) -> list[str]:
        """The loops and branches holding a step: they must run again to reach it."""
        parents = {r.key: r.parent_key for r in await self.store.steps(run_id)}
        found, parent = [], parents.get(key)
        while parent:
            found.append(parent)
            parent = parents.get(parent)
        return found

    async def rerun_keys(self, run_id: str, key: str, loaded: LoadedSop) -> list[str]:
        """The step, every step inside it, the steps after it that need it (at its level and at each
        enclosing level, with what is inside them), and its containers. "Inside" follows the recorded
        parent of each row, so steps in `if` branches (which share their parent's key prefix) count."""
        rows = await self.store.steps(run_id)
        parents = {r.key: r.parent_key for r in rows}
        siblings_of = sibling_lists(loaded.sop.steps)
        chosen = {key}
        current: str | None = key
        while current is not None:
            step_id = _step_id(current)
            prefix = current[: len(current) - len(step_id)]
            graph = build_graph(siblings_of[step_id])
            level = {r.key for r in rows if parents.get(r.key) == parents.get(current)}
            chosen |= {prefix + d for d in graph.dependants(step_id)} & level
            current = parents.get(current)
            if current is not None:
                chosen.add(current)
        grew = True
        while grew:  # everything whose parent is chosen, down to the deepest step
            more = {r.key for r in rows if parents.get(r.key) in chosen} - chosen
            grew = bool(more)
            chosen |= more
        return sorted(chosen | set(await self._blocked(run_id)))


def _step_id(key: str) -> str | None:
    try:
        return parse_key(key)[-1][0]
    except ValueError:
        return None
