from itertools import product

import pytest

from sop_engine.states import (
    RUN_TERMINAL,
    STEP_TERMINAL,
    RunStatus,
    StepStatus,
    TransitionError,
    check_run_transition,
    check_step_transition,
)

S = StepStatus
R = RunStatus

STEP_MOVES = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.SKIPPED),
    (S.PENDING, S.BLOCKED),
    (S.PENDING, S.FAILED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.SKIPPED),
    (S.RUNNING, S.PENDING),
    (S.RUNNING, S.CANCELLED),  # the run was cancelled while it ran
    (S.FAILED, S.PENDING),
    (S.FAILED, S.SKIPPED),  # a person retries or skips a failed step
    (S.COMPLETED, S.PENDING),  # a person reruns a completed step
    (S.SKIPPED, S.PENDING),
    (S.BLOCKED, S.PENDING),
    (S.BLOCKED, S.SKIPPED),
}

RUN_MOVES = {
    (R.QUEUED, R.RUNNING),
    (R.QUEUED, R.CANCELLED),
    (R.RUNNING, R.PAUSED),
    (R.RUNNING, R.COMPLETED),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
    (R.RUNNING, R.QUEUED),
    (R.PAUSED, R.RUNNING),
    (R.PAUSED, R.CANCELLED),
    (R.PAUSED, R.QUEUED),
    (R.FAILED, R.QUEUED),  # a person retries a failed step
    (R.COMPLETED, R.QUEUED),  # a person reruns a completed step
}


def test_status_values_are_the_stored_strings():
    assert [s.value for s in S] == ["pending", "running", "completed", "failed", "skipped", "blocked", "cancelled"]
    assert [s.value for s in R] == ["queued", "running", "paused", "completed", "failed", "cancelled"]
    assert StepStatus("blocked") is S.BLOCKED
    assert RunStatus.PAUSED == "paused"


def test_terminal_sets():
    assert frozenset({S.COMPLETED, S.FAILED, S.SKIPPED, S.BLOCKED, S.CANCELLED}) == STEP_TERMINAL
    assert frozenset({R.COMPLETED, R.FAILED, R.CANCELLED}) == RUN_TERMINAL


@pytest.mark.parametrize(("current", "new"), sorted(STEP_MOVES))
def test_allowed_step_transitions(current, new):
    check_step_transition(current, new)


@pytest.mark.parametrize(("current", "new"), sorted(set(product(StepStatus, StepStatus)) - STEP_MOVES))
def test_refused_step_transitions(current, new):
    with pytest.raises(TransitionError) as caught:
        check_step_transition(current, new)
    assert str(caught.value) == f"a {current.value} step cannot become {new.value}"


@pytest.mark.parametrize(("current", "new"), sorted(RUN_MOVES))
def test_allowed_run_transitions(current, new):
    check_run_transition(current, new)


@pytest.mark.parametrize(("current", "new"), sorted(set(product(RunStatus, RunStatus)) - RUN_MOVES))
def test_refused_run_transitions(current, new):
    with pytest.raises(TransitionError) as caught:
        check_run_transition(current, new)
    assert str(caught.value) == f"a {current.value} run cannot become {new.value}"


def test_a_cancelled_run_is_final():
    for new in RunStatus:
        with pytest.raises(TransitionError):
            check_run_transition(R.CANCELLED, new)


def test_a_completed_run_only_goes_back_to_the_queue():
    for new in set(RunStatus) - {R.QUEUED}:
        with pytest.raises(TransitionError):
            check_run_transition(R.COMPLETED, new)


def test_a_step_never_stays_in_its_status():
    for status in StepStatus:
        with pytest.raises(TransitionError, match=f"^a {status.value} step cannot become {status.value}$"):
            check_step_transition(status, status)


def test_transition_error_is_a_value_error():
    assert issubclass(TransitionError, ValueError)
