import pytest
from pydantic import BaseModel, ValidationError

from sop_engine.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        ("0.25s", 0.25),
        ("10", 10.0),  # text without a unit is seconds
        (" 3 s ", 3.0),
        (0, 0.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_reads_every_accepted_form(written, seconds):
    assert parse_duration(written) == seconds
    assert isinstance(parse_duration(written), float)


@pytest.mark.parametrize("written", ["soon", "", "2 days", "-1s", "2S", "1.s", "ms", None, [2], {"s": 2}])
def test_parse_duration_names_the_accepted_forms(written):
    with pytest.raises(ValueError) as caught:
        parse_duration(written)
    assert str(caught.value) == f"{written!r} is not a duration (write 500ms, 2s, 1m, or a number of seconds)"


@pytest.mark.parametrize("written", [-1, -0.5])
def test_parse_duration_refuses_negative_numbers(written):
    with pytest.raises(ValueError, match="^a duration cannot be negative$"):
        parse_duration(written)


@pytest.mark.parametrize("written", [True, False])
def test_parse_duration_refuses_booleans(written):
    # True is an int to Python, but `timeout: yes` is a mistake, not one second
    with pytest.raises(ValueError, match="^a duration is a number of seconds or text like 500ms, 2s, 1m$"):
        parse_duration(written)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0ms"),
        (0.25, "250ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (90, "90s"),
        (119.5, "119.5s"),
        (120, "2m"),
        (150, "2.5m"),
        (3600, "60m"),
    ],
)
def test_format_duration(seconds, shown):
    assert format_duration(seconds) == shown


@pytest.mark.parametrize("written", ["500ms", "2s", "1.5m", "1h", "10"])
def test_format_duration_reads_back_as_the_same_duration(written):
    seconds = parse_duration(written)
    assert parse_duration(format_duration(seconds)) == seconds


class _Timed(BaseModel):
    timeout: Duration


def test_duration_field_parses_text_in_a_model():
    assert _Timed(timeout="750ms").timeout == 0.75
    assert _Timed(timeout=3).timeout == 3.0


def test_duration_field_reports_the_accepted_forms():
    with pytest.raises(ValidationError) as caught:
        _Timed(timeout="later")
    [error] = caught.value.errors()
    assert error["loc"] == ("timeout",)
    assert error["msg"] == ("Value error, 'later' is not a duration (write 500ms, 2s, 1m, or a number of seconds)")


@pytest.mark.parametrize("value", ["1000000000h", 1e300, "50000m"])
def test_a_duration_longer_than_a_browser_timer_is_refused(value):
    """Over 2**31 ms Chromium's timers fire at once: a step with such a timeout failed in 70 ms, saying it waited."""
    with pytest.raises(ValueError, match="is longer than 24 days, the longest a duration can be"):
        parse_duration(value)
    assert parse_duration("24h") == 86400.0
