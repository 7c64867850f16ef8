"""Durations as written in documents: `500ms`, `2s`, `1m`, `1h`, or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


MAX_SECONDS = 24 * 24 * 3600.0  # 24 days: a browser's timers (and Playwright's timeouts) stop at 2**31 ms


def parse_duration(value: Any) -> float:
    """Seconds for a duration; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 500ms, 2s, 1m")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds is None or seconds != seconds:  # NaN
        raise ValueError(f"{value!r} is not a duration (write 500ms, 2s, 1m, or a number of seconds)")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than 24 days, the longest a duration can be")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"


Duration = Annotated[float, BeforeValidator(parse_duration)]
