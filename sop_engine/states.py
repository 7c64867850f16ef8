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
    CANCELLED = "cancelled"  # did not finish: the run was cancelled while it was in flight


class RunStatus(StrEnum):
    QUEUED = "queued"  # stored, waiting for a worker
    RUNNING = "running"  # a worker is executing it
    PAUSED = "paused"  # waiting for a person
    COMPLETED = "completed"  # every step ended and none failed the run
    FAILED = "failed"  # a step failed under on_error=fail (or rollback, once undone), or the run timed out
    CANCELLED = "cancelled"  # stopped on request


STEP_TERMINAL = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.BLOCKED, StepStatus.CANCELLED}
)
RUN_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

_STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.BLOCKED, StepStatus.FAILED}),
    StepStatus.RUNNING: frozenset(
        {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.PENDING, StepStatus.CANCELLED}
    ),
    # a person may retry or skip a failed step, and rerun a completed one
    StepStatus.FAILED: frozenset({StepStatus.PENDING, StepStatus.SKIPPED}),
    StepStatus.COMPLETED: frozenset({StepStatus.PENDING}),
    StepStatus.SKIPPED: frozenset({StepStatus.PENDING}),
    StepStatus.BLOCKED: frozenset({StepStatus.PENDING, StepStatus.SKIPPED}),
    StepStatus.CANCELLED: frozenset(),
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
    """A status change that the state machine does not allow, or that lost a race: nothing was changed."""


class ClaimLost(TransitionError):
    """A write of a run's execution refused because its worker no longer holds the run (it was cancelled,
    or taken over)."""


def step_sources(new: StepStatus) -> frozenset[StepStatus]:
    """The statuses a step may have for it to become `new`."""
    return frozenset(s for s, moves in _STEP_MOVES.items() if new in moves)


def run_sources(new: RunStatus) -> frozenset[RunStatus]:
    """The statuses a run may have for it to become `new`."""
    return frozenset(s for s, moves in _RUN_MOVES.items() if new in moves)


def check_steps(statuses: list[StepStatus]) -> None:
    """A chain of changes of one step (written in one transaction): each must follow the table."""
    for current, new in zip(statuses, statuses[1:], strict=False):
        check_step_transition(current, new)


def check_runs(statuses: list[RunStatus]) -> None:
    for current, new in zip(statuses, statuses[1:], strict=False):
        check_run_transition(current, new)


def check_step_transition(current: StepStatus, new: StepStatus) -> None:
    if new not in _STEP_MOVES[current]:
        raise TransitionError(f"a {current.value} step cannot become {new.value}")


def check_run_transition(current: RunStatus, new: RunStatus) -> None:
    if new not in _RUN_MOVES[current]:
        raise TransitionError(f"a {current.value} run cannot become {new.value}")
