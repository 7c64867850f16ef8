"""The restart planner: pure, so every case is exact."""

from __future__ import annotations

from sop_engine.document import load_sop
from sop_engine.graph import sibling_lists
from sop_engine.restart import Move, plan_restart
from sop_engine.states import StepStatus as S

SOP = load_sop(
    """
sop: 1
id: wizard
steps:
  - {id: open, action: log, message: open}
  - {id: name, action: log, message: name}
  - {id: plan, action: log, message: plan}
  - {id: send, action: log, message: send, resume_from: name}
  - {id: pay, action: log, message: pay, idempotent: false}
"""
).sop
SIBLINGS = sibling_lists(SOP.steps)


def plan(status: dict[str, S], skipped: set[str] | None = None) -> list[Move]:
    return plan_restart(status, SIBLINGS, skipped or set())


def test_a_step_in_flight_runs_again_and_its_resume_from_range_is_replayed():
    moves = plan({"open": S.COMPLETED, "name": S.COMPLETED, "plan": S.COMPLETED, "send": S.RUNNING})
    assert [(m.key, m.status) for m in moves] == [("send", S.PENDING), ("name", S.PENDING), ("plan", S.PENDING)]
    assert moves[1].reason == "runs again: send resumes from name"


def test_a_step_a_person_skipped_stays_skipped_in_a_replay():
    status = {"open": S.COMPLETED, "name": S.COMPLETED, "plan": S.SKIPPED, "send": S.PENDING}
    moves = plan(status, skipped={"plan"})
    assert [(m.key, m.status) for m in moves] == [("name", S.PENDING)]
    # skipped because its `when` was false: looked at again
    assert [m.key for m in plan(status)] == ["name", "plan"]


def test_a_non_idempotent_step_in_flight_is_held_for_a_person():
    status = {"open": S.COMPLETED, "name": S.COMPLETED, "plan": S.COMPLETED, "send": S.COMPLETED, "pay": S.RUNNING}
    [held] = plan(status)
    assert (held.key, held.status, held.held) == ("pay", S.FAILED, True)
    assert held.reason == "interrupted during a non-idempotent step: retry it or skip it"


def test_blocked_steps_are_looked_at_again_and_nothing_else_moves():
    assert plan({"open": S.FAILED, "name": S.BLOCKED, "plan": S.PENDING}) == [Move("name", S.PENDING, None)]
    assert plan({"open": S.COMPLETED, "name": S.PENDING}) == []
