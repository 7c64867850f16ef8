"""str methods that widen text (and join), checked before they run."""

from __future__ import annotations

from typing import Any

from .budget import Budget, refuse_size, size_of
from .errors import ExpressionError
from .operators import check_format


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def replaced_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * (len(new) - len(old))


def check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> None:
    limit = budget.max_output
    if name in ("ljust", "rjust", "center", "zfill"):
        width = arg(args, kwargs, 0, "width", 0)
        if isinstance(width, int) and width > limit:
            raise ExpressionError(f"str.{name}() wider than {limit} characters is refused")
    elif name == "expandtabs":
        tab = arg(args, kwargs, 0, "tabsize", 8)
        refuse_size(len(text) + text.count("\t") * tab if isinstance(tab, int) else 0, budget, "str.expandtabs()")
    elif name == "replace":
        size = replaced_size(
            text, arg(args, kwargs, 0, "old"), arg(args, kwargs, 1, "new"), arg(args, kwargs, 2, "count")
        )
        refuse_size(size, budget, "str.replace()")
    elif name in ("format", "format_map"):
        check_format(text, args if name == "format" else (), kwargs if name == "format" else args[0], budget)


def check_join(items: list[Any], separator: Any, budget: Budget) -> None:
    gaps = len(separator) * max(len(items) - 1, 0) if isinstance(separator, str | bytes | bytearray) else 0
    total = gaps
    for item in items:
        total += size_of(item, budget)
        if total > budget.max_output:
            break
    refuse_size(total, budget, "join()")
