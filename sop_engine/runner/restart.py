"""Where a run goes on after an interruption: steps left in flight run again (a non-idempotent one waits for a
person), and a step naming `resume_from` replays the steps from there."""

from __future__ import annotations

from ..errors import ErrorKind, StepError
from ..events import utcnow
from ..loops import (
    parse_key,
)
from ..states import StepStatus
from ..steps import Step
from .outcome import INTERRUPTED


class Restart:
    """Where an execution picks up: steps an earlier one left in flight, and `resume_from` ranges."""

    def _step_of(self, key: str) -> Step:
        step_id = parse_key(key)[-1][0]
        return next(s for s in self._siblings[step_id] if s.id == step_id)

    async def _reset_interrupted(self) -> None:
        """Steps an earlier execution left running (it crashed, or the process was killed) run again, at
        least once: back to pending. A non-idempotent one waits for a person instead. And where the run
        goes on at a step naming `resume_from` (it was in flight, or is next), the steps from that one run
        again too: the page state they made (a filled form, a wizard's memory) is not in a checkpoint."""
        for key, status in list(self.status.items()):
            if status == StepStatus.BLOCKED:
                await self.step_event(key, "pending", reason=None)
            if status != StepStatus.RUNNING:
                continue
            step = self._step_of(key)
            if not step.idempotent and not step.children():
                error = StepError(ErrorKind.INTERRUPTED, f"{INTERRUPTED}: retry it or skip it").as_dict()
                await self.emit(
                    "step.updated",
                    {"key": key, "status": "failed", "error": error},
                    step=(key, {"status": "failed", "error": error, "finished_at": utcnow()}),
                )
                self._hold.add(key)
                continue
            await self.step_event(key, "pending", reason="interrupted: runs again")
        for key, status in list(self.status.items()):
            step = self._step_of(key)
            if status == StepStatus.PENDING and step.resume_from and key not in self._hold:
                await self._rewind(key, step)

    async def _rewind(self, key: str, step: Step) -> None:
        prefix = key[: len(key) - len(step.id)]
        ids = [s.id for s in self._siblings[step.id]]
        start, end = ids.index(step.resume_from), ids.index(step.id)  # type: ignore[arg-type]
        for sid in ids[min(start, end) : end]:
            sibling = prefix + sid
            if sibling in self.person_skipped:
                continue
            if self.status.get(sibling) in (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED):
                await self.step_event(
                    sibling, "pending", reason=f"runs again: {step.id} resumes from {step.resume_from}"
                )
