"""Run and step statuses, and the one place that allows or refuses a transition."""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    PENDING = "pending"  # known, not started yet
    RUNNING = "running"  # an attempt is in flight
    COMPLETED = "completed"  # finished, outputs recorded
    FAILED = "failed"  # gave up after its last attempt
    SKIPPED = "skipped"  # not run: its `when` was false, or a person skipped it
    BLOCKED = "blocked"  # not run: a step it depends on failed


class RunStatus(StrEnum):
    QUEUED = "queued"  # stored, waiting for a worker
    RUNNING = "running"  # a worker is executing it
    PAUSED = "paused"  # waiting for a person
    COMPLETED = "completed"  # every step ended and none failed the run
    FAILED = "failed"  # a step failed under on_error=fail, or the run timed out
    CANCELLED = "cancelled"  # stopped on request


STEP_TERMINAL = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.BLOCKED})
RUN_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

_STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.BLOCKED, StepStatus.FAILED}),
    StepStatus.RUNNING: frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.PENDING}),
    # a person may retry or skip a failed step, and rerun a completed one
    StepStatus.FAILED: frozenset({StepStatus.PENDING, StepStatus.SKIPPED}),
    StepStatus.COMPLETED: frozenset({StepStatus.PENDING}),
    StepStatus.SKIPPED: frozenset({StepStatus.PENDING}),
    StepStatus.BLOCKED: frozenset({StepStatus.PENDING, StepStatus.SKIPPED}),
}

_RUN_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.PAUSED, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED}
    ),
    RunStatus.PAUSED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.QUEUED}),
    # a person retries a failed step, or reruns a completed one: the run goes back in the queue
    RunStatus.COMPLETED: frozenset({RunStatus.QUEUED}),
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),
    RunStatus.CANCELLED: frozenset(),
}


class TransitionError(ValueError):
    """A status change that the state machine does not allow."""


def check_step_transition(current: StepStatus, new: StepStatus) -> None:
    if new not in _STEP_MOVES[current]:
        raise TransitionError(f"a {current.value} step cannot become {new.value}")


def check_run_transition(current: RunStatus, new: RunStatus) -> None:
    if new not in _RUN_MOVES[current]:
        raise TransitionError(f"a {current.value} run cannot become {new.value}")
