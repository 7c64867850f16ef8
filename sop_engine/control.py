"""What a person asks of a live run (pause, step, skip, breakpoints, decisions, form answers),
and the waiting it causes. The runner consults it before every step; the server fills it in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Waiting:
    """Why a live run is paused, and what would let it go on."""

    reason: str
    key: str | None = None  # the step it waits before, or on
    kind: str = "pause"  # pause | breakpoint | failed | input | approval
    form: dict[str, Any] | None = None  # fields a person must give (input, approval)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "key": self.key, "kind": self.kind, "form": self.form}


@dataclass
class RunControl:
    pause_requested: bool = False
    stepping: bool = False  # run one more step, then pause
    breakpoints: set[str] = field(default_factory=set)  # step keys (add[1].type) or step ids (type)
    skips: set[str] = field(default_factory=set)  # pending step keys to skip when reached
    waiting: Waiting | None = None
    stopping: bool = False  # the process shuts down: the run goes back to the queue instead of being cancelled
    handing_back: bool = False  # a control takes the run back from its worker to change it and queue it again
    _answer: asyncio.Future[dict[str, Any]] | None = None

    def has_breakpoint(self, key: str, step_id: str) -> bool:
        return key in self.breakpoints or step_id in self.breakpoints

    def expect(self, waiting: Waiting) -> None:
        """Starts waiting: from now on an answer is kept, even one given before `wait` is awaited."""
        self.waiting = waiting
        self._answer = asyncio.get_running_loop().create_future()

    async def wait(self) -> dict[str, Any]:
        """Blocks until a person answers: `{"action": "resume" | "step" | "retry" | "skip" | "submit", ...}`."""
        assert self._answer is not None, "expect() first"
        try:
            return await self._answer
        finally:
            self.waiting = None
            self._answer = None

    def answer(self, action: str, **data: Any) -> bool:
        """Lets a waiting run go on; False when it was not waiting."""
        if self._answer is None or self._answer.done():
            return False
        self._answer.set_result({"action": action, **data})
        return True
