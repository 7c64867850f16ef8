import pytest
import tenacity

from sop_engine.errors import RETRYABLE, ErrorKind, StepError, is_retryable
from sop_engine.retries import RetryPolicy
from sop_engine.steps import RetrySpec


def _wait_after(policy: RetryPolicy, failed_attempt: int) -> float:
    """What tenacity waits once attempt number `failed_attempt` has failed."""
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = failed_attempt
    return policy.wait()(state)


def test_default_policy_is_one_attempt():
    assert RetryPolicy() == RetryPolicy(attempts=1, backoff="fixed", delay=1.0, max_delay=30.0, jitter=0.0)


def test_from_spec_reads_durations_as_seconds():
    spec = RetrySpec(attempts=4, backoff="linear", delay="500ms", max_delay="1m", jitter="100ms")
    assert RetryPolicy.from_spec(spec) == RetryPolicy(4, "linear", 0.5, 60.0, 0.1)


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        ("fixed", [0.0, 0.0, 2.0, 2.0, 2.0, 2.0]),
        ("linear", [0.0, 0.0, 2.0, 4.0, 6.0, 7.0]),
        ("exponential", [0.0, 0.0, 2.0, 4.0, 7.0, 7.0]),
    ],
)
def test_delay_before_each_attempt(backoff, delays):
    policy = RetryPolicy(attempts=6, backoff=backoff, delay=2.0, max_delay=7.0)
    assert [policy.delay_before(n) for n in range(6)] == delays


def test_a_fixed_delay_is_capped_by_max_delay():
    policy = RetryPolicy(backoff="fixed", delay=10.0, max_delay=3.0)
    assert policy.delay_before(2) == 3.0
    assert _wait_after(policy, 1) == 3.0


@pytest.mark.parametrize("backoff", ["fixed", "linear", "exponential"])
def test_tenacity_waits_what_delay_before_says(backoff):
    policy = RetryPolicy(attempts=8, backoff=backoff, delay=0.5, max_delay=5.0)
    for attempt in range(2, 9):
        assert _wait_after(policy, attempt - 1) == pytest.approx(policy.delay_before(attempt))


def test_jitter_adds_up_to_its_own_length():
    policy = RetryPolicy(backoff="exponential", delay=1.0, max_delay=30.0, jitter=0.5)
    assert isinstance(policy.wait(), tenacity.wait.wait_combine)
    for _ in range(50):
        assert 4.0 <= _wait_after(policy, 3) <= 4.5


def test_no_jitter_means_no_random_part():
    assert isinstance(RetryPolicy(backoff="fixed").wait(), tenacity.wait_fixed)
    assert isinstance(RetryPolicy(backoff="linear").wait(), tenacity.wait_incrementing)
    assert isinstance(RetryPolicy(backoff="exponential").wait(), tenacity.wait_exponential)


def _retrying(policy: RetryPolicy, sleeps: list[float]) -> tenacity.Retrying:
    # how the runner drives attempts, with the sleeps recorded instead of slept
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=policy.wait(),
        retry=tenacity.retry_if_exception(is_retryable),
        reraise=True,
        sleep=sleeps.append,
    )


def test_a_retryable_error_is_tried_every_attempt_with_backoff():
    policy = RetryPolicy(attempts=4, backoff="linear", delay=0.5)
    sleeps: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        raise StepError(ErrorKind.ELEMENT_NOT_FOUND, "no match for #go", selector="#go")

    with pytest.raises(StepError, match="no match for #go"):
        _retrying(policy, sleeps)(flaky)
    assert len(calls) == 4
    assert sleeps == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("error", [StepError(ErrorKind.ASSERTION, "expected 3"), ValueError("bug")])
def test_a_final_error_is_not_retried(error):
    sleeps: list[float] = []
    calls = []

    def broken():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        _retrying(RetryPolicy(attempts=5), sleeps)(broken)
    assert len(calls) == 1
    assert sleeps == []


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_which_error_kinds_are_retryable(kind):
    expected = kind in {
        ErrorKind.TIMEOUT,
        ErrorKind.ELEMENT_NOT_FOUND,
        ErrorKind.NAVIGATION,
        ErrorKind.BROWSER,
        ErrorKind.HTTP,
        ErrorKind.CIRCUIT,  # after the host's cool-down
    }
    error = StepError(kind, "x")
    assert error.retryable is expected
    assert is_retryable(error) is expected
    assert (kind in RETRYABLE) is expected


def test_only_step_errors_are_retryable():
    assert is_retryable(TimeoutError("late")) is False


def test_describe_adds_the_page_when_the_message_does_not_say_it():
    url = "http://127.0.0.1:8765/todo.html"
    assert StepError(ErrorKind.TIMEOUT, "timed out", url=url).describe() == f"timed out (page: {url})"
    assert StepError(ErrorKind.NAVIGATION, f"cannot load {url}", url=url).describe() == f"cannot load {url}"
    assert StepError(ErrorKind.ACTION, "bad script").describe() == "bad script"


def test_as_dict_keeps_only_the_details_given():
    error = StepError(ErrorKind.ASSERTION, "count is 0, expected 3", selector="li", expected=3, found=0)
    assert error.as_dict() == {
        "kind": "assertion",
        "message": "count is 0, expected 3",
        "retryable": False,
        "selector": "li",
        "expected": 3,
        "found": 0,
    }
    assert StepError(ErrorKind.HTTP, "503").as_dict() == {"kind": "http", "message": "503", "retryable": True}


def test_step_error_keeps_its_message_as_str():
    assert str(StepError(ErrorKind.BROWSER, "the page closed")) == "the page closed"
