"""Rollback: the compensations of the steps that completed, run in reverse order of completion. Pure: the
plan, the keys of its step instances and what a run's record says of it; the runner (runner/undo.py) runs it.

A compensation of the step instance `<key>` is the step instance `undo.<key>.<compensation id>`: `undo.pay.refund`,
`undo.seats[1].hold.release`. No key of a document's own steps begins with `undo.` (a step `undo` has the key
`undo`, its iterations `undo[0].…`), so the two never meet.

The run's `rollback` column says where a rollback is: `requested` (by a person, not begun), `running` (its
step instances are written: an execution after a crash goes on with those not ended), `done` (with its counts),
or `cancelled` (the run was cancelled before its rollback ended).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .loops import parse_key
from .states import StepStatus
from .steps import Step

PREFIX = "undo."
REQUESTED, RUNNING, DONE, CANCELLED = "requested", "running", "done", "cancelled"
ESCALATED = " (escalated: retry it, skip it, roll back or cancel)"  # said after a failed step's error (escalate)
INSTANCES_MAX = 10_000  # compensations one rollback may run (a long loop of steps that each have some)

MISPLACED = {  # fields a compensation may not have, and why
    "compensate": "a compensation has no compensations of its own",
    "on_error": "a compensation has no on_error: one that fails is recorded and the rollback goes on",
    "depends_on": "compensations run one after the other in the order written: depends_on has no say there",
    "resume_from": "a compensation that was interrupted runs again from its start: resume_from has no say there",
}


class RollbackError(ValueError):
    """A rollback that cannot be planned (too many compensations)."""


def is_undo(key: str) -> bool:
    return key.startswith(PREFIX)


def undo_key(key: str, compensation_id: str) -> str:
    return f"{PREFIX}{key}.{compensation_id}"


def split_undo(key: str) -> tuple[str, str]:
    """`undo.seats[1].hold.release` -> ("seats[1].hold", "release")."""
    inner = key[len(PREFIX) :]
    compensated, _, compensation = inner.rpartition(".")
    return compensated, compensation


@dataclass(frozen=True)
class Compensation:
    key: str  # its own step instance: undo.<compensated>.<id>
    compensated: str  # the step instance it undoes
    step: Step


def step_of(key: str, siblings: Mapping[str, list[Step]]) -> Step | None:
    """The document's step of a (non-undo) step instance key."""
    try:
        sid = parse_key(key)[-1][0]
    except ValueError:
        return None
    return next((s for s in siblings.get(sid, ()) if s.id == sid), None)


def plan(completed: Iterable[str], siblings: Mapping[str, list[Step]]) -> list[Compensation]:
    """`completed`: the step instances that completed, in the order they did. Their compensations, the last
    completed first, each step's own in the order written."""
    found: list[Compensation] = []
    for key in reversed(list(completed)):
        step = None if is_undo(key) else step_of(key, siblings)
        for compensation in step.compensate if step is not None else ():
            found.append(Compensation(undo_key(key, compensation.id), key, compensation))
            if len(found) > INSTANCES_MAX:
                raise RollbackError(f"the rollback would run more than {INSTANCES_MAX} compensations")
    return found


def compensation_of(key: str, siblings: Mapping[str, list[Step]]) -> Compensation | None:
    """The compensation a recorded undo step instance runs (after a crash)."""
    compensated, cid = split_undo(key)
    step = step_of(compensated, siblings)
    found = next((c for c in step.compensate if c.id == cid), None) if step is not None else None
    return Compensation(key, compensated, found) if found is not None else None


def outcome(statuses: Iterable[StepStatus]) -> dict[str, int]:
    """How the compensations ended, as the run's record says."""
    ended = list(statuses)
    return {
        "completed": sum(s == StepStatus.COMPLETED for s in ended),
        "failed": sum(s == StepStatus.FAILED for s in ended),
        "skipped": sum(s == StepStatus.SKIPPED for s in ended),
    }


def summary(counts: Mapping[str, int]) -> str:
    """`rolled back: 2 compensations completed, 1 failed`."""
    completed, failed = counts.get("completed", 0), counts.get("failed", 0)
    noun = "compensation" if completed == 1 else "compensations"
    text = f"rolled back: {completed} {noun} completed, {failed} failed"
    if counts.get("skipped"):
        text += f", {counts['skipped']} skipped"
    return text


def stopped_rollback(rollback: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The run's rollback record once the run is cancelled: one requested or running says it was cancelled."""
    if not rollback or rollback.get("state") not in (REQUESTED, RUNNING):
        return dict(rollback) if rollback else None
    return {**rollback, "state": CANCELLED}


def rolled_back(rollback: Mapping[str, Any] | None) -> bool:
    """The run has been rolled back, or is being: a second rollback is not offered."""
    return bool(rollback)
