"""Operators checked before they run: `**`, `*`, `+`, and `%` or str.format with widths."""

from __future__ import annotations

import math
import re
import string
from typing import Any

from .budget import Budget, refuse_size, size_of
from .errors import ExpressionError

TEMPLATE_MAX_BITS = 10_000  # the largest integer '**' and '*' may give (about 3000 digits)
SEQUENCE = (str, bytes, bytearray, list, tuple)


def latin(value: Any) -> Any:
    """Bytes as text of the same length, so the checks for text apply to them."""
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_widths(widths: list[str], starred: bool, values: Any, budget: Budget) -> None:
    """Refuse a format whose widths, or the numbers that stand in for `*` or `{n}` widths, pass max_output."""
    if any(len(w) > 12 or int(w) > budget.max_output for w in widths if w.isdigit()):
        raise ExpressionError(f"a format wider than {budget.max_output} characters is refused")
    if starred:
        flat = values.values() if isinstance(values, dict) else values if isinstance(values, tuple | list) else [values]
        numbers = (str(v) for v in flat if isinstance(v, int | str))
        if any(len(n) > 12 or int(n) > budget.max_output for v in numbers for n in re.findall(r"\d+", v)):
            raise ExpressionError(f"a format wider than {budget.max_output} characters is refused")


def check_percent(text: str, values: Any, budget: Budget) -> None:
    found = _PERCENT.findall(text)
    _check_widths([w for pair in found for w in pair], any("*" in pair for pair in found), values, budget)
    for value in values.values() if isinstance(values, dict) else values if isinstance(values, tuple) else [values]:
        refuse_size(size_of(value, budget), budget, "a value formatted into text")


def check_format(text: str, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> None:
    specs = [spec for _, field, spec, _ in string.Formatter().parse(text) if field is not None and spec]
    widths = [w for spec in specs for w in re.findall(r"\d+", spec)]
    _check_widths(widths, any("{" in spec for spec in specs), [*args, *kwargs.values()], budget)


def check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1):
        return
    if exponent > TEMPLATE_MAX_BITS or exponent * math.log2(abs(base)) > TEMPLATE_MAX_BITS:
        raise ExpressionError(f"'**' with a result that large is refused (over {TEMPLATE_MAX_BITS} bits)")


def check_product(left: Any, right: Any, budget: Budget) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > TEMPLATE_MAX_BITS:
            raise ExpressionError(f"'*' with a result that large is refused (over {TEMPLATE_MAX_BITS} bits)")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    repeats = isinstance(sequence, SEQUENCE) and isinstance(times, int) and times > 1
    if repeats and len(sequence) * times > budget.max_output:
        raise ExpressionError(f"'*' that repeats text or a list past {budget.max_output} characters is refused")


def check_sum(left: Any, right: Any, budget: Budget) -> None:
    joins = isinstance(left, SEQUENCE) and isinstance(right, SEQUENCE)
    if joins and len(left) + len(right) > budget.max_output:
        raise ExpressionError(f"'+' that joins past {budget.max_output} characters is refused")
