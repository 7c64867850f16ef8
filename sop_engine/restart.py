"""Where a run goes on after an interruption, as a plan: pure, no I/O. Steps an earlier execution left in
flight run again, at least once (a non-idempotent one waits for a person instead); blocked steps are looked
at again; and where the run goes on at a step naming `resume_from`, the steps from that one run again too:
the page state they made (a filled form, a wizard's memory) is not in a checkpoint. A step a person skipped
stays skipped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .loops import parse_key
from .rollback import is_undo
from .states import StepStatus
from .steps import Step

INTERRUPTED = "interrupted during a non-idempotent step"
REPLAYED = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED)


@dataclass(frozen=True)
class Move:
    """One step's change before the execution starts."""

    key: str
    status: StepStatus  # PENDING (runs again), or FAILED (held for a person)
    reason: str | None
    held: bool = False  # a non-idempotent step that was in flight: a person says whether it runs again


def plan_restart(
    status: Mapping[str, StepStatus], siblings: Mapping[str, list[Step]], person_skipped: set[str]
) -> list[Move]:
    """`status`: each step instance's recorded status; `siblings`: step id -> the list it belongs to
    (graph.sibling_lists); `person_skipped`: keys a person skipped."""
    # a compensation in flight runs again (sop_engine.rollback); none is blocked or replayed
    moves = [
        Move(k, StepStatus.PENDING, "interrupted: runs again")
        for k, s in status.items()
        if is_undo(k) and s == StepStatus.RUNNING
    ]
    status = {k: s for k, s in status.items() if not is_undo(k)}
    now = dict(status)

    def move(key: str, new: StepStatus, reason: str | None, held: bool = False) -> None:
        now[key] = new
        moves.append(Move(key, new, reason, held))

    for key, current in status.items():
        if current == StepStatus.BLOCKED:
            move(key, StepStatus.PENDING, None)
        elif current == StepStatus.RUNNING:
            step = _step_of(key, siblings)
            if not step.idempotent and not step.children():
                move(key, StepStatus.FAILED, f"{INTERRUPTED}: retry it or skip it", held=True)
            else:
                move(key, StepStatus.PENDING, "interrupted: runs again")
    held = {m.key for m in moves if m.held}
    for key in list(now):
        step = _step_of(key, siblings)
        if now[key] == StepStatus.PENDING and step.resume_from and key not in held:
            for sibling in _range(key, step, siblings):
                if sibling not in person_skipped and now.get(sibling) in REPLAYED:
                    move(sibling, StepStatus.PENDING, f"runs again: {step.id} resumes from {step.resume_from}")
    return moves


def _step_of(key: str, siblings: Mapping[str, list[Step]]) -> Step:
    step_id = parse_key(key)[-1][0]
    return next(s for s in siblings[step_id] if s.id == step_id)


def _range(key: str, step: Step, siblings: Mapping[str, list[Step]]) -> list[str]:
    """The keys of the steps from `resume_from` up to (not including) the step, at its level."""
    prefix = key[: len(key) - len(step.id)]
    ids = [s.id for s in siblings[step.id]]
    start, end = ids.index(step.resume_from), ids.index(step.id)  # type: ignore[arg-type]
    return [prefix + sid for sid in ids[min(start, end) : end]]
