"""What an execution ends with, and the sinks it reports to: RunFailed, RunPaused, RunOutcome, FrameSink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..control import Waiting
from ..document import LoadedSop
from ..masking import MASK, Masker
from ..restart import INTERRUPTED
from ..states import RunStatus

__all__ = ["INTERRUPTED", "LOST", "FrameSink", "RollingBack", "RunFailed", "RunOutcome", "RunPaused"]


class RunFailed(Exception):
    """Ends the run: a step failed under on_error=fail."""


class RollingBack(RunFailed):
    """Ends the steps' part of the run: a step failed under on_error=rollback, or a person chose to roll back.
    The compensations run next (runner/undo.py), then the run fails with `message`."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class RunPaused(Exception):
    """Ends a headless execution with the run paused: it needs a person's decision."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__(waiting.reason)
        self.waiting = waiting


# what a checkpoint (each tab's URL, cookies, local storage) cannot bring back when a browser is rebuilt
LOST = (
    "what the pages held in memory (script state, e.g. items of a single-page app)",
    "form fields filled and not submitted",
    "session storage",
    "scroll positions and open dialogs",
)


@dataclass
class RunOutcome:
    run_id: str
    status: RunStatus
    outputs: dict[str, Any]
    error: str | None


class FrameSink(Protocol):
    """Receives a picture of the page after each browser step, but only while someone watches."""

    def watching(self, run_id: str) -> bool: ...

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None: ...


def shown_inputs(loaded: LoadedSop, inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as they may be shown or stored: secret ones as ***."""
    secrets = loaded.sop.secret_inputs
    masker = Masker([inputs.get(n) for n in secrets])
    return {n: MASK if n in secrets else masker(v) for n, v in inputs.items()}
