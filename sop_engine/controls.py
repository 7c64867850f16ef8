"""What each control of a person means, and when it is allowed: one table, read by the API (which lists the
controls allowed now), by the server's controls (which refuse the others with 409) and by the README.

| control    | on                                                   | does                                        |
|------------|------------------------------------------------------|---------------------------------------------|
| pause      | a running run                                        | stops before the next step                  |
| resume     | a paused run not waiting on a decision or a form     | goes on                                     |
| step       | a paused run not waiting on a decision or a form     | runs one step, then pauses                  |
| cancel     | a queued, running or paused run                      | ends it; steps in flight become `cancelled` |
| rollback   | a paused run that waits on a failed step's decision, | runs the compensations of the steps that    |
|            | or a failed run not rolled back yet                  | completed, last first; the run ends failed  |
| skip       | a pending or blocked step of a run still going, or a | marks it `skipped` (outputs read as none);  |
|            | failed step of a run that ended or waits on it       | the run goes on from there, never runs it   |
| retry      | a failed step of a run that ended or waits on it     | runs it again, and what it blocked          |
| rerun      | a completed step of a completed or failed run, or of | runs it and what depends on it again        |
|            | a paused run that waits for no decision or form      |                                             |
| breakpoint | a pending step of a run still going                  | pauses before it (on or off)                |
| submit     | the step a paused run waits on for a form (input,    | answers it; the run goes on                 |
|            | approval)                                            |                                             |

A run that was rolled back (or is being) offers no rollback again, and no step control but a breakpoint on
a step still to come: what it did was undone; a new run does it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .graph import build_graph, sibling_lists
from .loops import parse_key
from .rollback import is_undo, rolled_back
from .states import RUN_TERMINAL, RunStatus, StepStatus
from .steps import Step

RUN_CONTROLS = ("pause", "resume", "step", "cancel", "rollback")
STEP_CONTROLS = ("skip", "retry", "rerun", "breakpoint", "submit")
DECISIONS = ("failed", "input", "approval")  # waits that only a step's control or a form can answer
PERSON = "skipped by "  # how the reason of a step a person skipped begins


def skipped_by_person(status: str, reason: str | None) -> bool:
    """A step a person skipped stays skipped: a replay of a `resume_from` range never runs it."""
    return status == StepStatus.SKIPPED and bool(reason) and reason.startswith(PERSON)  # type: ignore[union-attr]


def run_controls(
    status: str, waiting: Mapping[str, Any] | None, rollback: Mapping[str, Any] | None = None
) -> list[str]:
    """The run's controls allowed now. `rollback`: the run's record of its rollback (sop_engine.rollback)."""
    run = RunStatus(status)
    if run == RunStatus.RUNNING:
        return ["pause", "cancel"]
    if run == RunStatus.PAUSED:
        if waiting and waiting.get("kind") == "failed" and not rolled_back(rollback):
            return ["cancel", "rollback"]
        if waiting and waiting.get("kind") in DECISIONS:
            return ["cancel"]
        return ["resume", "step", "cancel"]
    if run == RunStatus.QUEUED:
        return ["cancel"]
    if run == RunStatus.FAILED and not rolled_back(rollback):
        return ["rollback"]
    return []


def waits_on(waiting: Mapping[str, Any] | None, key: str) -> bool:
    """The paused run waits for a person's decision on this failed step."""
    return bool(waiting) and waiting.get("kind") == "failed" and waiting.get("key") == key  # type: ignore[union-attr]


def step_controls(
    step_status: str,
    key: str,
    run_status: str,
    waiting: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None = None,
) -> list[str]:
    """A step's controls allowed now. A compensation (undo.…) has none; a run rolled back, only breakpoints."""
    step, run = StepStatus(step_status), RunStatus(run_status)
    if is_undo(key):
        return []
    if rolled_back(rollback):
        return ["breakpoint"] if step == StepStatus.PENDING and run not in RUN_TERMINAL else []
    ended = run in (RunStatus.FAILED, RunStatus.COMPLETED)
    found: list[str] = []
    if step == StepStatus.FAILED and (ended or waits_on(waiting, key)):
        found += ["skip", "retry"]
    elif step in (StepStatus.PENDING, StepStatus.BLOCKED) and run not in RUN_TERMINAL:
        found.append("skip")
    deciding = bool(waiting) and waiting.get("kind") in DECISIONS  # type: ignore[union-attr]
    if step == StepStatus.COMPLETED and (ended or (run == RunStatus.PAUSED and not deciding)):
        found.append("rerun")
    if step == StepStatus.PENDING and run not in RUN_TERMINAL:
        found.append("breakpoint")
    if waiting and waiting.get("kind") in ("input", "approval") and waiting.get("key") == key:
        found.append("submit")
    return found


def why_not(control: str, step_status: str | None, key: str | None, run_status: str) -> str:
    """The reason a control is refused, for the 409."""
    if step_status is None:
        allowed = {
            "pause": "a running run",
            "resume": "a paused run that waits for no decision",
            "step": "a paused run that waits for no decision",
            "cancel": "a queued, running or paused run",
            "rollback": "a paused run that waits on a failed step's decision, or a failed run not rolled back yet",
        }
        return f"the run is {run_status}; {control} needs {allowed[control]}"
    allowed = {
        "skip": "a pending or blocked step of a run still going, or a failed one of a run that ended or waits on it",
        "retry": "a failed step of a run that ended or waits on it",
        "rerun": "a completed step of a completed or failed run, or of a paused run that waits for no decision",
        "breakpoint": "a pending step of a run still going",
        "submit": "the step a paused run waits on for a form",
    }
    return f"step {key} is {step_status} in a {run_status} run; {control} needs {allowed[control]}"


# which rows a retry or rerun resets -------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    key: str
    parent: str | None
    status: str


def step_id(key: str) -> str | None:
    try:
        return parse_key(key)[-1][0]
    except ValueError:
        return None


def containers(rows: Iterable[StepRow], key: str) -> list[str]:
    """The loops and branches holding a step, innermost first: they must run again to reach it."""
    parents = {r.key: r.parent for r in rows}
    found, parent = [], parents.get(key)
    while parent:
        found.append(parent)
        parent = parents.get(parent)
    return found


def retry_keys(rows: list[StepRow], key: str) -> list[str]:
    """A retry: the step, what it blocked, and its containers."""
    blocked = [r.key for r in rows if r.status == StepStatus.BLOCKED]
    return sorted({key, *blocked, *containers(rows, key)})


def rerun_keys(rows: list[StepRow], key: str, steps: list[Step]) -> list[str]:
    """A rerun: the step with everything inside it, the steps after it that need it (at its level and at
    each enclosing level, with what is inside them), what is blocked, and its containers (which go back to
    pending to reach it again; their other children stay completed and give back their outputs, so a rerun
    of one loop iteration runs that iteration only, then the loop's `collect` is made again). "Inside"
    follows the recorded parent of each row, so steps in `if` branches (which share their parent's key
    prefix) count."""
    parents = {r.key: r.parent for r in rows}
    siblings_of = sibling_lists(steps)
    chosen = {key}
    held = containers(rows, key)
    current: str | None = key
    while current is not None:
        sid = step_id(current)
        assert sid is not None
        prefix = current[: len(current) - len(sid)]
        graph = build_graph(siblings_of[sid])
        level = {r.key for r in rows if parents.get(r.key) == parents.get(current)}
        chosen |= {prefix + d for d in graph.dependants(sid)} & level
        current = parents.get(current)
    grew = True
    while grew:  # everything inside a chosen step, down to the deepest
        more = {r.key for r in rows if parents.get(r.key) in chosen} - chosen
        grew = bool(more)
        chosen |= more
    blocked = {r.key for r in rows if r.status == StepStatus.BLOCKED}
    return sorted(chosen | set(held) | blocked)
