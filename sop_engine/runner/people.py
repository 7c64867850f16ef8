"""A person's say in a run: pauses, breakpoints, step mode, decisions on failed or interrupted steps, forms."""

from __future__ import annotations

from typing import Any

from ..control import Waiting
from ..errors import ErrorKind, StepError
from ..states import RunStatus
from ..steps import Step
from .outcome import INTERRUPTED, RollingBack, RunPaused


class People:
    """Pauses, breakpoints and a person's decisions."""

    async def pause(self, waiting: Waiting) -> dict[str, Any]:
        """Pauses the run until a person answers; returns the answer."""
        assert self.control is not None
        async with self._pause_lock:
            self.control.expect(waiting)  # an answer given while the pause is being recorded is kept
            await self._set_run(RunStatus.PAUSED, waiting=self.mask(waiting.as_dict()))
            answer = await self.control.wait()
            await self._set_run(RunStatus.RUNNING, waiting=None)
        if answer["action"] == "step":
            self.control.stepping = True
        return answer

    async def ask(self, waiting: Waiting) -> dict[str, Any]:
        if self.control is None:
            raise StepError(ErrorKind.ACTION, f"{waiting.reason}: this step needs a person; run it in the server")
        answer = await self.pause(waiting)
        for name, spec in ((waiting.form or {}).get("fields") or {}).items():
            if spec.get("secret"):
                self.mask.add(answer.get("values", {}).get(name))
                self.hide(answer.get("values", {}).get(name))
        return answer

    async def _gate(self, step: Step, key: str) -> bool:
        """Before a step: waits while the run is paused or at a breakpoint; False when the step is to be skipped."""
        if key in self._hold:
            return await self._decide_interrupted(step, key)
        control = self.control
        if control is None:
            return True
        while True:
            if key in control.skips:
                control.skips.discard(key)
                return False
            if control.pause_requested:
                waiting = Waiting(f"paused before {key}", key, "pause")
            elif (step.pause_before or control.has_breakpoint(key, step.id)) and key not in self._passed_breakpoints:
                waiting = Waiting(f"breakpoint before {key}", key, "breakpoint")
            else:
                return True
            control.pause_requested = False
            await self.pause(waiting)
            if waiting.kind == "breakpoint":
                self._passed_breakpoints.add(key)

    async def _decide_interrupted(self, step: Step, key: str) -> bool:
        """A non-idempotent step was in flight when the run was interrupted: it may or may not have
        happened (a payment, a submitted form), so a person says whether to run it again."""
        self._hold.discard(key)
        waiting = Waiting(f"{INTERRUPTED} ({key}): retry it or skip it", key, "failed")
        if self.control is None:
            raise RunPaused(waiting)
        answer = await self.pause(waiting)
        if answer["action"] == "rollback":
            raise RollingBack(key, self.mask(waiting.reason))
        if answer["action"] == "skip":
            return False
        await self.step_event(key, "pending", reason="retried by a person after an interruption")
        return True

    def _stepped(self) -> None:
        """After a leaf step, in step mode: pause before the next one."""
        if self.control is not None and self.control.stepping:
            self.control.stepping = False
            self.control.pause_requested = True
