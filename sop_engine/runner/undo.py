"""A rollback: the compensations of the steps that completed, last completed first, each a step instance
`undo.<step key>.<id>`, then the run ends failed with its first error and how the rollback went.

What a compensation's templates read (the names in its `inputs`): the outputs of the step instance it undoes,
then the inputs that step was given (a loop's item, when the step declared it), then the run's inputs; and the
outputs of the compensations of the same step that ran before it. A compensation that fails is recorded
(`failed`) and the rollback goes on. The plan is written before the first compensation runs (the step rows and
the run's `rollback` column), so an execution after a crash goes on with the compensations not ended."""

from __future__ import annotations

from collections import ChainMap
from typing import Any, NoReturn

from ..masking import MASK
from ..rollback import (
    DONE,
    REQUESTED,
    RUNNING,
    Compensation,
    RollbackError,
    compensation_of,
    is_undo,
    outcome,
    plan,
    summary,
)
from ..states import StepStatus
from .outcome import RollingBack, RunFailed

ENDED = (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED)


class Undo:
    """Rollbacks: planned, recorded, run (and gone on with after a crash)."""

    def rollback_due(self) -> RollingBack | None:
        """The rollback the run's record asks for, or left unfinished: this execution runs it, no step."""
        state = self.rollback_state
        if not state or state.get("state") not in (REQUESTED, RUNNING):
            return None
        return RollingBack(state.get("step"), state.get("error") or "the run failed")

    async def roll_back(self, cause: RollingBack) -> NoReturn:
        try:
            compensations = await self._planned(cause)
        except RollbackError as exc:
            raise RunFailed(f"{cause.message}; not rolled back: {exc}") from None
        scopes: dict[str, ChainMap[str, Any]] = {}
        ended: list[StepStatus] = []
        for compensation in compensations:
            scope = scopes.get(compensation.compensated)
            if scope is None:
                scope = scopes[compensation.compensated] = self._undo_scope(compensation.compensated)
            status = self.status.get(compensation.key)
            if status in ENDED:  # before a crash: not run again; what it made, later ones still see
                if status == StepStatus.COMPLETED:
                    scope.maps[0].update(self.stored_outputs.get(compensation.key) or {})
                ended.append(status)  # type: ignore[arg-type]
                continue
            ended.append(await self._compensate(compensation, scope))
        counts = outcome(ended)
        record = {**(self.rollback_state or {}), "state": DONE, **counts}
        self.rollback_state = self.rollback_end = record  # written with the run's end (Execution._finish)
        raise RunFailed(f"{cause.message}; {summary(counts)}")

    async def _planned(self, cause: RollingBack) -> list[Compensation]:
        """The compensations, in the order they run: as recorded when the rollback began (after a crash), or
        planned now and recorded before the first runs."""
        state = self.rollback_state or {}
        if state.get("state") == RUNNING:
            found = [compensation_of(key, self._siblings) for key in self.status if is_undo(key)]
            return [c for c in found if c is not None]
        done = (k for k, s in self.status.items() if s == StepStatus.COMPLETED and not is_undo(k))
        completed = sorted((k for k in done if k in self.completion), key=self.completion.__getitem__)
        compensations = plan(completed, self._siblings)
        rows = [
            {
                "key": c.key,
                "step_id": c.step.id,
                "parent_key": None,
                "action": c.step.action,
                "status": StepStatus.PENDING.value,
            }
            for c in compensations
            if c.key not in self.status
        ]
        record = {"state": RUNNING, "step": cause.key, "error": cause.message, "total": len(compensations)}
        if state.get("by"):
            record["by"] = state["by"]
        added = {"parent": None, "keys": [r["key"] for r in rows], "rollback": True}
        await self.emit("steps.added", added, run={"rollback": record}, new_steps=rows)
        self.rollback_state = record
        return compensations

    def _undo_scope(self, key: str) -> ChainMap[str, Any]:
        """What the compensations of step instance `key` read: its outputs, the inputs it was given (a masked
        one is not: a secret is read from the run's inputs), the run's inputs."""
        given = {
            n: v for n, v in (self.recorded_inputs.get(key) or {}).items() if not (n in self.tainted and v == MASK)
        }
        return ChainMap({}, dict(self.stored_outputs.get(key) or {}), given, self.inputs)

    async def _compensate(self, compensation: Compensation, scope: ChainMap[str, Any]) -> StepStatus:
        """Runs one compensation under its own retry policy; one that fails is recorded and does not stop the
        rollback."""
        step = compensation.step.model_copy(update={"on_error": "continue"})
        variables = self._variables(step, scope)
        return await self.run_leaf(step, scope, compensation.key, variables)
