"""Run and step controls, as the engine's table says (sop_engine.controls): allowed, or refused with 409.

A control on a run a worker of this server is executing answers it (through its RunControl); with Redis, one
on a run that another process executes goes to that process, which applies it (web/relay.py). A control
that changes what is already recorded (retry after the run ended, rerun, a decision on a run paused before
a restart) takes the run back from its worker if needed, resets the step rows, and queues the run again:
the next execution picks up from the database."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sop_engine.actions.human import check_form_values
from sop_engine.controls import (
    PERSON,
    StepRow,
    rerun_keys,
    retry_keys,
    run_controls,
    step_controls,
    step_id,
    why_not,
)
from sop_engine.document import LoadedSop
from sop_engine.events import utcnow
from sop_engine.liveness import orphaned
from sop_engine.rollback import ESCALATED, REQUESTED, stopped_rollback
from sop_engine.states import RUN_TERMINAL, RunStatus
from sop_engine.steps import Input

from .errors import HolderUnavailable, Invalid, NotFound, Refused
from .workers import LiveRun, WorkerPool

if TYPE_CHECKING:
    from .relay import ControlRelay


def _control(control: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A control runs under the pool's claim lock: a run claimed at this moment is live before it looks.
    With a relay, one on a run another process holds is applied there instead (not under this lock: the
    wait is for that process)."""
    signature = inspect.signature(control)

    @functools.wraps(control)
    async def serialised(self: Controls, run_id: str, *args: Any, **kwargs: Any) -> None:
        run = await self._held_elsewhere(run_id)
        if run is not None:
            given = signature.bind(self, run_id, *args, **kwargs).arguments
            sent = {name: value for name, value in given.items() if name not in ("self", "loaded")}
            if await self.relay.forward(run.worker, control.__name__, sent):  # type: ignore[union-attr]
                return
            # nobody listens for it: a holder that is gone, or alive but out of reach for now (reconnecting to
            # Redis), which would keep a run paused in memory that a control here had queued again; a cancel
            # goes through the gate either way (the holder finds its claim gone at its next write)
            if control.__name__ != "cancel" and not orphaned(run.worker, run.heartbeat_at, self.pool.name):
                raise HolderUnavailable(f"the run is executed by {run.worker}, out of Redis's reach now: try again")
        async with self.pool.claiming:
            await control(self, run_id, *args, **kwargs)

    return serialised


@dataclass
class Controls:
    store: Any  # web.db.AsyncStore: every call awaited, in a thread
    pool: WorkerPool
    relay: ControlRelay | None = None  # with Redis: controls on runs other processes execute

    async def here(self, control: str, run_id: str, **arguments: Any) -> None:
        """Applies a control in this process, whoever holds the run (a control another process sent here)."""
        async with self.pool.claiming:
            await getattr(type(self), control).__wrapped__(self, run_id, **arguments)

    async def _held_elsewhere(self, run_id: str) -> Any:
        """The run, when another process executes it and the relay may reach that process."""
        if self.relay is None or run_id in self.pool.live:
            return None
        run = await self.store.run(run_id)
        if run is None or run.worker is None or run.worker == self.pool.name:
            return None
        return run

    def reaches(self, run: Any) -> bool:
        """Whether a control here reaches the run's execution: a worker of this process executes it, or,
        with Redis, the relay sends it to the process that does (the API's `Viewer.live`)."""
        if run.id in self.pool.live:
            return True
        return self.relay is not None and run.worker is not None and run.worker != self.pool.name

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

    def _check(self, control: str, run: Any, live: LiveRun | None, row: Any = None) -> None:
        """Refuses (409) a control that the engine's table does not allow now (sop_engine.controls)."""
        waiting = live.control.waiting.as_dict() if live and live.control.waiting else run.waiting
        if row is None:  # as web.api.serialize.run_controls_for lists them to whoever may control the run
            allowed = run_controls(run.status, run.waiting, run.rollback)
        else:
            allowed = step_controls(row.status, row.key, run.status, waiting, run.rollback)
            if run.status == RunStatus.RUNNING and live is None:
                allowed = []  # another process executes it: only cancel reaches it there
        if control not in allowed:
            holder = f" (executed by {run.worker}, not this server)" if run.worker and live is None else ""
            raise Refused(why_not(control, row.status if row else None, row.key if row else None, run.status) + holder)

    # run controls ----------------------------------------------------------------------------

    @_control
    async def pause(self, run_id: str, who: str) -> None:
        run = await self._run(run_id)
        live, waiting = self._waiting(run_id)
        if run.status == RunStatus.RUNNING and live is None:
            raise Refused(f"the run is executed by {run.worker}, not this server: it can only be cancelled here")
        self._check("pause", run, live)
        if waiting is not None:
            raise Refused("the run is already paused")
        live.control.pause_requested = True  # type: ignore[union-attr]
        await self._audit(run_id, who, "pause")

    @_control
    async def resume(self, run_id: str, who: str, action: str = "resume") -> None:
        run = await self._run(run_id)
        live, waiting = self._waiting(run_id)
        if run.status == RunStatus.PAUSED:
            decision = waiting.as_dict() if waiting else run.waiting
            if decision and decision.get("kind") == "failed":
                raise Refused(f"step {decision['key']} failed: retry it or skip it")
            if decision and decision.get("kind") in ("input", "approval"):
                raise Refused(f"step {decision['key']} waits for a person's answer: submit its form")
        self._check(action, run, live)
        if live is None:  # paused before a restart: back to the queue, to pick up where it was
            self.pool.wake()
            await self._audit(run_id, who, action, run=self._requeue())
            return
        self._answer(live, action)
        await self._audit(run_id, who, action)

    @_control
    async def cancel(self, run_id: str, who: str) -> None:
        run = await self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status} already")
        if await self.pool.cancel(run_id):  # executed here: its runner records the cancel, unless it ended first
            ended = await self._run(run_id)
            if ended.status != RunStatus.CANCELLED:
                raise Refused(f"the run was {ended.status} before the cancel reached it")
        else:  # through the gate, which ends its steps in flight too (in another process, at its next write)
            ended = {"status": "cancelled", "error": f"cancelled by {who}", "worker": None, "finished_at": utcnow()}
            if run.rollback:
                ended["rollback"] = stopped_rollback(run.rollback)
            await self.pool.record(
                run_id, "run.updated", {"status": "cancelled", "error": f"cancelled by {who}"}, run=ended
            )
        await self._audit(run_id, who, "cancel")

    @_control
    async def rollback(self, run_id: str, who: str) -> None:
        """Runs the compensations of the steps that completed, last first (sop_engine.rollback); the run ends
        failed with its first error. A run paused here on a failed step's decision rolls back at once; one
        that ended failed, or waits since before a restart, goes back to the queue with its rollback
        requested, and the next execution runs it."""
        run = await self._run(run_id)
        live, waiting = self._waiting(run_id)
        self._check("rollback", run, live)
        if live is not None and waiting is not None and waiting.kind == "failed":
            self._answer(live, "rollback")
            await self._audit(run_id, who, "rollback", waiting.key)
            return
        decision = run.waiting if run.status == RunStatus.PAUSED else None
        failed = (decision or {}).get("key") or next(
            (r.key for r in await self.store.steps(run_id) if r.status == "failed"), None
        )
        error = ((decision or {}).get("reason") or run.error or "the run failed").removesuffix(ESCALATED)
        await self.pool.cancel(run_id, hand_back=True)  # paused in this process: its worker lets go first
        self.pool.wake()
        requested = {"state": REQUESTED, "step": failed, "error": error, "by": who}
        await self._audit(run_id, who, "rollback", failed, run={**self._requeue(), "rollback": requested})

    # step controls ---------------------------------------------------------------------------

    @_control
    async def skip(self, run_id: str, key: str, who: str) -> None:
        """The step is marked skipped (its outputs read as none) and the run goes on from there: it is
        never run, not even by a replay of a `resume_from` range."""
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        live, waiting = self._waiting(run_id)
        self._check("skip", run, live, row)
        if live is not None and waiting is not None and waiting.kind == "failed" and waiting.key == key:
            self._answer(live, "skip")  # the runner marks it skipped, and goes on
            await self._audit(run_id, who, "skip", key)
        elif row.status == "failed":  # the run ended, or waits on it since before a restart
            self.pool.wake()
            reason = f"{PERSON}{who} after it failed"
            await self._audit(
                run_id, who, "skip", key, step=(key, {"status": "skipped", "reason": reason}), run=self._requeue()
            )
        elif live is not None and row.status == "pending":
            live.control.skips.add(key)
            await self._audit(run_id, who, "skip", key)
            if waiting is not None and waiting.key == key and waiting.kind in ("pause", "breakpoint"):
                self._answer(live, "step")  # skip it now, and stay paused before the next step
        else:  # pending or blocked, recorded now; the execution (here, or after the queue) reads it
            await self._audit(run_id, who, "skip", key, step=(key, {"status": "skipped", "reason": f"{PERSON}{who}"}))

    @_control
    async def retry(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        live, waiting = self._waiting(run_id)
        self._check("retry", run, live, row)
        if live is not None and waiting is not None and waiting.kind == "failed" and waiting.key == key:
            self._answer(live, "retry")
            await self._audit(run_id, who, "retry", key)
            return
        await self.pool.cancel(run_id, hand_back=True)  # paused in this process: its worker lets go first
        keys = retry_keys(await self._rows(run_id), key)
        self.pool.wake()
        await self._audit(run_id, who, "retry", key, reset=(keys, f"retried by {who}"), run=self._requeue())

    @_control
    async def rerun(self, run_id: str, key: str, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        row = await self._step_row(run_id, key)
        live, _ = self._waiting(run_id)
        self._check("rerun", run, live, row)
        await self.pool.cancel(run_id, hand_back=True)  # paused in this process: its worker lets go first
        keys = rerun_keys(await self._rows(run_id), key, loaded.sop.steps)
        self.pool.wake()
        await self._audit(
            run_id, who, "rerun", key, reset=(keys, f"rerun by {who}"), run=self._requeue(), data={"reset": keys}
        )

    @_control
    async def breakpoint(self, run_id: str, key: str, on: bool, who: str, loaded: LoadedSop) -> None:
        run = await self._run(run_id)
        if run.status in RUN_TERMINAL:
            raise Refused(f"the run is {run.status}; breakpoints are for runs still to go")
        if step_id(key) not in {s.id for s in loaded.sop.walk()}:
            raise NotFound(f"the SOP has no step {key}")
        row = next((r for r in await self.store.steps(run_id) if r.key == key), None)
        if row is not None:  # a step instance: only a pending one (a step id names every instance, to come too)
            self._check("breakpoint", run, self.pool.live.get(run_id), row)
        points = set(run.breakpoints or [])
        points = points | {key} if on else points - {key}
        live = self.pool.live.get(run_id)
        if live is not None:
            live.control.breakpoints = set(points)
        await self._audit(run_id, who, "breakpoint", key, run={"breakpoints": sorted(points)}, data={"on": on})

    @_control
    async def submit(self, run_id: str, key: str, values: dict[str, Any], who: str, loaded: LoadedSop) -> None:
        live, waiting = self._waiting(run_id)
        if waiting is None or waiting.key != key or waiting.kind not in ("input", "approval"):
            raise Refused(f"step {key} is not waiting for a person's answer")
        step = next((s for s in loaded.sop.walk() if s.id == step_id(key)), None)
        if isinstance(step, Input):
            problems = check_form_values(step, values)
            if problems:
                raise Invalid("; ".join(problems))
        elif not isinstance(values.get("approved"), bool):
            raise Invalid("'approved' must be true or false")
        secret = sorted(n for n, f in (waiting.form or {}).get("fields", {}).items() if f.get("secret"))
        self._answer(live, "submit", values=values)  # type: ignore[arg-type]
        await self._audit(run_id, who, "submit", key, data={"fields": sorted(values), "secret": secret})

    async def _rows(self, run_id: str) -> list[StepRow]:
        return [StepRow(r.key, r.parent_key, r.status) for r in await self.store.steps(run_id)]
