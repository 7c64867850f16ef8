"""Applies the restart plan (sop_engine.restart) before an execution starts."""

from __future__ import annotations

from ..errors import ErrorKind, StepError
from ..events import utcnow
from ..restart import plan_restart
from ..rollback import is_undo
from ..states import StepStatus


class Restart:
    """Where an execution picks up: steps an earlier one left in flight, and `resume_from` ranges."""

    async def _reset_interrupted(self) -> None:
        rolling = self.rollback_due() is not None
        for move in plan_restart(self.status, self._siblings, self.person_skipped):
            if rolling and not is_undo(move.key):  # no step of the document runs again in a rollback
                continue
            if move.status == StepStatus.PENDING:
                await self.step_event(move.key, "pending", reason=move.reason)
                continue
            error = StepError(ErrorKind.INTERRUPTED, move.reason or "").as_dict()
            await self.emit(
                "step.updated",
                {"key": move.key, "status": "failed", "error": error},
                step=(move.key, {"status": "failed", "error": error, "finished_at": utcnow()}),
            )
            self._hold.add(move.key)
