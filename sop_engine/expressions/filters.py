"""Jinja's filters, each checked before it runs and charged after; `fromjson` within the JSON limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import pass_context
from jinja2.utils import _PassArg

from ..limits import LimitError, ParseError, load_json
from .budget import Budget, charge, current_budget, refuse_size, size_of
from .errors import ExpressionError
from .methods import arg, check_join, replaced_size
from .operators import check_percent


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> None:
    limit, text = budget.max_output, _text(value)
    for given in (value, *args, *kwargs.values()):
        refuse_size(size_of(given, budget), budget, f"a value given to '{name}'")
    if name == "center" and isinstance(width := arg(args, kwargs, 0, "width", 80), int) and width > limit:
        raise ExpressionError(f"center wider than {limit} characters is refused")
    elif name == "indent":
        width = arg(args, kwargs, 0, "width", 4)
        wide = width if isinstance(width, int) else len(str(width))
        refuse_size(len(text) + wide * (text.count("\n") + 1), budget, "indent")
    elif name == "wordwrap":
        width, wrap = arg(args, kwargs, 0, "width", 79), arg(args, kwargs, 2, "wrapstring") or "\n"
        breaks = len(text) // max(width, 1) + len(re.findall(r"\s+|-", text)) + 1 if isinstance(width, int) else 0
        refuse_size(len(text) + breaks * len(str(wrap)), budget, "wordwrap")
    elif name == "replace":
        size = replaced_size(
            text, arg(args, kwargs, 0, "old"), arg(args, kwargs, 1, "new"), arg(args, kwargs, 2, "count")
        )
        refuse_size(size, budget, "replace")
    elif name == "format" and isinstance(value, str):
        check_percent(value, kwargs or args, budget)
    elif name == "tojson" and isinstance(indent := arg(args, kwargs, 0, "indent"), int):
        refuse_size(indent * size_of(value, budget), budget, "tojson")
    elif name in ("batch", "slice"):
        count = arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > limit:
            raise ExpressionError(f"{name} of more than {limit} items is refused")


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, checked before it runs and after; marked as wanting the context, so that Jinja never calls it
    while compiling a template (no constant folding)."""
    passes = _PassArg.from_obj(func)

    @pass_context
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if name == "join" and not isinstance(value, str | list | tuple | dict):
            value = list(value)
        if name == "join" and isinstance(value, list | tuple):
            check_join(list(value), arg(args, kwargs, 0, "d", ""), budget)
        _check_filter(name, value, args, kwargs, budget)
        if passes is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif passes is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif passes is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return charge(result, budget, f"the result of '{name}'")

    return bounded


def fromjson(text: str) -> Any:
    try:
        return load_json(text, "the JSON text")
    except (ParseError, LimitError) as exc:
        raise ExpressionError(str(exc)) from None
