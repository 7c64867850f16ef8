"""The one async orchestrator: asks the pure core what to do, awaits executors, persists, emits.  lifecycle (Runner)
· execution (one run's life) · flow (order, conditions, loops) · leaf (one step) · people (pauses and decisions)
· restart (where a run goes on) · outcome (what it ends with)."""

from __future__ import annotations

from ..events import StoreUnavailable, call_store
from .execution import Execution, StoredRun
from .lifecycle import Runner
from .outcome import FrameSink, RunFailed, RunOutcome, RunPaused, shown_inputs

__all__ = [
    "Execution",
    "FrameSink",
    "RunFailed",
    "RunOutcome",
    "RunPaused",
    "Runner",
    "StoreUnavailable",
    "StoredRun",
    "call_store",
    "shown_inputs",
]
