"""The size of what a render builds: one budget per render, kept per thread."""

from __future__ import annotations

import threading
from typing import Any

from .. import settings
from .errors import ExpressionError

TEMPLATE_MAX_BUILT = 16  # a render may build this many times template_max_output characters in all


class Budget:
    """One render's limits and what it has built so far; sizes of containers already measured, by id."""

    def __init__(self) -> None:
        self.max_output, self.max_range = settings.template_limits()
        self.built = 0
        self.sizes: dict[int, tuple[Any, int]] = {}  # the value is kept so its id is not reused


_local = threading.local()


def current_budget() -> Budget:
    budget = getattr(_local, "budget", None)
    if budget is None:
        budget = _local.budget = Budget()
    return budget


def fresh_budget() -> Budget:
    """A new budget for the render this thread starts: nothing built yet, no sizes remembered."""
    budget = _local.budget = Budget()
    return budget


def drop_budget() -> None:
    # the remembered sizes keep their values alive: let them go when the render ends
    _local.budget = None


def size_of(value: Any, budget: Budget, remember: bool = True) -> int:
    """About how many characters a value takes as text; counting stops once over max_output. A list or dict
    measured is remembered (and kept) until the render ends: templates pass the same ones again and again."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if not isinstance(value, list | tuple | dict | set | frozenset | range):
        return value.bit_length() // 3 + 1 if isinstance(value, int) else 1
    known = budget.sizes.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    total, stack = 0, [value]
    while stack and total <= budget.max_output:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 2
        elif isinstance(item, range):
            total += 2 * len(item)
        elif isinstance(item, list | tuple | dict | set | frozenset):
            total += 2 * len(item) + 2
            if total <= budget.max_output:
                stack.extend(item)
                stack.extend(item.values() if isinstance(item, dict) else ())
        else:
            total += item.bit_length() // 3 + 1 if isinstance(item, int) else 1
    if remember:
        budget.sizes[id(value)] = (value, total)
    return total


def refuse_size(size: int, budget: Budget, what: str) -> None:
    if size > budget.max_output:
        raise ExpressionError(f"{what} of more than {budget.max_output} characters is refused")


def charge(result: Any, budget: Budget, what: str = "a value") -> Any:
    if isinstance(result, str | bytes | bytearray | list | tuple | dict):
        size = size_of(result, budget, remember=False)
        refuse_size(size, budget, what)
        budget.built += size
        if budget.built > TEMPLATE_MAX_BUILT * budget.max_output:
            raise ExpressionError(f"the template built more than {TEMPLATE_MAX_BUILT * budget.max_output} characters")
    return result
